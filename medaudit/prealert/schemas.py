"""The national pre/in-process analysis interface's shapes: 3101 (analysis) and 3103 (feedback).

Field names are the national ones (医保信息平台 明细审核事前事中分析服务 3101 /
事前事中服务反馈服务 3103). A request may be the bare ``input.data`` object or the whole
message with ``infno``, ``input: {data: ...}``; fields this service does not use are accepted
and ignored, as hospital systems send many.

How a 3101 request maps to the data contract (see :func:`to_check_request`):

| 3101 | contract |
|---|---|
| ``patn_id``, ``gend``, ``brdy`` | ``psn_no``, ``gend``, ``brdy`` |
| encounter ``mdtrt_id``, ``medins_id``, ``medins_lv``, ``med_type``, ``insutype`` | ``mdtrt_id``, ``fixmedins_code``, ``hosp_lv``, ``med_type``, ``insutype`` |
| ``adm_date``, ``dscg_date``, ``dscg_main_dise_codg``, ``adm_dept_codg``, ``dr_codg`` | ``begntime``, ``endtime``, ``dscg_maindiag_code``, ``adm_dept_codg``, ``chfpdr_code`` |
| diagnosis ``dise_codg``, ``dise_name``, ``maindise_flag`` | ``diag_code``, ``diag_name``, ``maindiag_flag`` |
| order ``rx_id``, ``hilist_code``, ``hilist_name``, ``hilist_type`` | ``bkkp_sn``, ``hilist_code``, ``hilist_name``, ``list_type`` |
| ``cnt``, ``pric``, ``sumamt``, ``ownpay_amt`` | ``cnt``, ``pric``, ``det_item_fee_sumamt``, ``fulamt_ownpay_amt`` |
| ``drord_begn_date``, ``drord_dept_codg``, ``drord_dr_codg`` | ``fee_ocur_time``, ``bilg_dept_codg``, ``bilg_dr_code`` |
| ``hilist_lv`` 1/2/3 (甲/乙/丙), ``chrg_type`` | ``chrgitm_lv`` 01/02/03, ``med_chrgitm_type`` |
| ``self_paying_flag`` 1 | ``hosp_appr_flag`` 2 (switched to self-pay) |
| ``drord_bhvr`` 1 (出院带药) | ``dscg_tkdrug_flag`` 1 |
| ``prd_days``, ``pric_uplmt_amt`` (extensions, optional) | the same |
| operation ``oprn_code``, ``oprn_name``, ``oprn_date``, ``main_oprn_flag`` | ``setl_list_oprn_d``'s ``oprn_oprt_code``, ``oprn_oprt_name``, ``oprn_oprt_date``, ``main_oprn_flag`` |

What hospital systems send is taken as they send it: times as ``YYYY-MM-DD HH:MM:SS`` or
compact ``yyyyMMddHHmmss`` (``yyyyMMdd`` for a date), local Asia/Shanghai time unless an
offset is given (a bare number is refused: it is not read as a Unix timestamp); ``""`` or
null for any optional field; a single object where a list is expected (``patient_dtos``,
``fsi_encounter_dtos``, ``fsi_order_dtos``, ``fsi_diagnose_dtos``, ``fsi_operation_dtos``);
fields this service does not know are ignored.

``curr_drord_flag`` 1 marks the orders being written now; 0 the visit's earlier orders (the
visit so far). When no order carries 1, every order is new.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal, Optional, TypeVar, Union

from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

#: the pattern every text field matches: no control characters (checked by pydantic-core, not by
#: a Python validator per field: a 10-order request has about 200 text fields)
PRINTABLE = r"^[^\x00-\x1f]*$"
#: text of the national interface: stripped, numbers taken as text, no control characters
Text = Annotated[str, StringConstraints(pattern=PRINTABLE)]


#: the zone of a time sent without an offset (hospital systems send local time)
LOCAL = ZoneInfo("Asia/Shanghai")


def _when(v: Any) -> Any:
    """A date or time as hospital systems send it -> what pydantic-core parses (or None).

    ``"2026-12-01 14:25:52"`` (and ISO forms) go on to pydantic-core as they are; the compact
    ``"20261201142552"`` and ``"20261201"`` are read here (pydantic-core would take a string of
    digits for a Unix timestamp: year 2612); ``""`` and null are no date. A number, or any other
    string of digits, is refused: a Unix timestamp is not a form the national interface uses,
    and reading one as such gives a date nobody meant."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        if s.isdigit():
            # rewritten as ISO text for pydantic-core to read (and check: month 13 is refused
            # there); strptime would cost 5 us a date
            n = len(s)
            if n == 14:
                return f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[8:10]}:{s[10:12]}:{s[12:]}"
            if n == 12:
                return f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[8:10]}:{s[10:]}:00"
            if n == 8:
                return f"{s[:4]}-{s[4:6]}-{s[6:]}T00:00:00"
            raise ValueError(
                f"{s!r} is not a date: send 'YYYY-MM-DD HH:MM:SS', 'yyyyMMddHHmmss' or 'yyyyMMdd' "
                "(a Unix timestamp is not read)"
            )
        return s
    if isinstance(v, (int, float, Decimal)):  # bool too
        raise ValueError(
            f"a number ({v!r}) is not a date: send 'YYYY-MM-DD HH:MM:SS', 'yyyyMMddHHmmss' or "
            "'yyyyMMdd' as text (a Unix timestamp is not read)"
        )
    return v


def _local(v: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """A time with an offset -> the same instant in Asia/Shanghai, without offset (as stored)."""
    if v is not None and v.tzinfo is not None:
        return v.astimezone(LOCAL).replace(tzinfo=None)
    return v


def _day(v: Any) -> Any:
    w = _when(v)
    if isinstance(w, str) and len(w) > 10 and w[10] in " T" and w[11:].strip("0:.") == "":
        return w[:10]  # "1970-05-05 00:00:00", "19700505": the date
    return w


def _listed(v: Any) -> Any:
    """A single object where a list is expected (some HIS builds send one) -> a list of it; null -> []."""
    if v is None:
        return []
    return [v] if isinstance(v, dict) else v


#: a time of the national interface: see :func:`_when`; naive times are Asia/Shanghai local
When = Annotated[dt.datetime, BeforeValidator(_when)]
OptWhen = Annotated[Optional[dt.datetime], BeforeValidator(_when)]
Day = Annotated[dt.date, BeforeValidator(_day)]
#: optional text ("" is taken as it is and read as no value by :func:`to_check_request`)
OptText = Optional[Text]


# an optional amount up to a bound: "" or null is no value (``""`` is kept by pydantic-core, without
# a Python call, and read as None by :func:`to_check_request`); the three bounds the fields use
_Blank = Literal[""]
Amount14 = Optional[Union[Annotated[Decimal, Field(ge=0, le=Decimal("99999999999999"), decimal_places=4)], _Blank]]
Amount10 = Optional[Union[Annotated[Decimal, Field(ge=0, le=Decimal("9999999999"), decimal_places=4)], _Blank]]
Amount5 = Optional[Union[Annotated[Decimal, Field(ge=0, le=Decimal("99999"), decimal_places=4)], _Blank]]

_T = TypeVar("_T")
#: a list of DTOs; one object where a list is expected is read as a list of one (:func:`_listed`)
Many = Annotated[list[_T], BeforeValidator(_listed)]


def error_message(err: dict) -> str:
    """A validation error's message in words a hospital's integrator understands."""
    if err.get("type") == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == PRINTABLE:
        return "must not contain control characters"
    return err["msg"]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)


class OrderDto(_In):
    rx_id: Text = Field(min_length=1, description="处方(医嘱)标识")
    rxno: OptText = None
    hilist_code: Text = Field(min_length=1, description="医保目录编码")
    hilist_name: OptText = None
    hilist_type: OptText = Field(None, description="目录类别: 101 西药中成药, 102 中药饮片, 201 医疗服务项目, 301 耗材")
    hilist_lv: OptText = Field(None, description="目录等级 1 甲 2 乙 3 丙")
    chrg_type: OptText = None
    cnt: Decimal = Field(gt=0, le=Decimal("99999999"), decimal_places=4, description="数量")
    pric: Decimal = Field(ge=0, le=Decimal("9999999999"), decimal_places=4, description="单价")
    sumamt: Amount14 = Field(None, description="明细项目费用总额 (default cnt x pric)")
    ownpay_amt: Amount14 = Field(None, description="全自费金额")
    selfpay_amt: Optional[Union[Decimal, Literal[""]]] = None
    drord_begn_date: When = Field(description="医嘱开始日期 (YYYY-MM-DD HH:MM:SS or yyyyMMddHHmmss)")
    drord_stop_date: OptWhen = None
    drord_dept_codg: OptText = None
    drord_dr_codg: OptText = None
    drord_bhvr: OptText = Field(None, description="医嘱行为: 1 出院带药")
    curr_drord_flag: OptText = Field(None, description="1 本次医嘱, 0 既往医嘱")
    self_paying_flag: OptText = Field(None, description="1 自费")
    long_drord_flag: OptText = None
    prd_days: Amount5 = Field(None, description="用药天数 (extension)")
    pric_uplmt_amt: Amount10 = Field(None, description="限价 (extension)")


class DiagnoseDto(_In):
    dise_codg: Text = Field(min_length=1, description="诊断编码")
    dise_name: OptText = None
    maindise_flag: OptText = Field(None, description="1 主诊断")
    inout_dise_type: OptText = None
    dias_srt_no: OptText = None


class OperationDto(_In):
    oprn_code: Text = Field(min_length=1, description="手术操作代码 (ICD-9-CM-3 医保版)")
    oprn_name: OptText = None
    main_oprn_flag: OptText = Field(None, description="1 主手术")
    oprn_date: OptWhen = Field(None, description="手术操作日期")
    setl_list_oprn_id: OptText = None

    @model_validator(mode="before")
    @classmethod
    def _contract_names(cls, data: Any):
        # some HIS builds send the settlement list's names (oprn_oprt_code ...)
        if isinstance(data, dict) and "oprn_code" not in data and "oprn_oprt_code" in data:
            data = {
                **data,
                "oprn_code": data["oprn_oprt_code"],
                "oprn_name": data.get("oprn_oprt_name"),
                "oprn_date": data.get("oprn_oprt_date", data.get("oprn_date")),
            }
        return data


class EncounterDto(_In):
    mdtrt_id: Text = Field(min_length=1, description="就诊标识")
    medins_id: Text = Field(min_length=1, description="医疗机构编码")
    medins_name: OptText = None
    medins_lv: OptText = Field(None, description="医疗机构等级 (hosp_lv); absent: the stored visit's, if any")
    adm_date: When = Field(description="入院日期/就诊时间 (YYYY-MM-DD HH:MM:SS or yyyyMMddHHmmss)")
    dscg_date: OptWhen = None
    dscg_main_dise_codg: OptText = None
    adm_dept_codg: OptText = None
    dscg_dept_codg: OptText = None
    dr_codg: OptText = None
    med_type: Text = Field(min_length=1, description="医疗类别")
    insutype: OptText = Field(None, description="险种类型; absent: the stored visit's, if any")
    fsi_diagnose_dtos: Many[DiagnoseDto] = Field(default_factory=list)
    fsi_order_dtos: Many[OrderDto] = Field(default_factory=list)
    fsi_operation_dtos: Many[OperationDto] = Field(default_factory=list, description="手术操作 (setl_list_oprn_d)")


class PatientDto(_In):
    patn_id: Text = Field(min_length=1, description="参保人标识 (psn_no)")
    patn_name: OptText = None
    gend: Text = Field(min_length=1, description="性别 1 男 2 女")
    brdy: Day = Field(description="出生日期 (YYYY-MM-DD or yyyyMMdd)")
    poolarea: OptText = None
    curr_mdtrt_id: Text = Field(min_length=1, description="当前就诊标识")
    fsi_encounter_dtos: Many[EncounterDto] = Field(min_length=1)

    @model_validator(mode="after")
    def _current_visit(self):
        if not any(e.mdtrt_id == self.curr_mdtrt_id for e in self.fsi_encounter_dtos):
            raise ValueError(f"curr_mdtrt_id {self.curr_mdtrt_id!r} is not one of fsi_encounter_dtos' mdtrt_id")
        return self

    def current(self) -> EncounterDto:
        return next(e for e in self.fsi_encounter_dtos if e.mdtrt_id == self.curr_mdtrt_id)


class Request3101(_In):
    """明细审核事前事中分析服务 (3101) input."""

    trig_scen: Text = Field(min_length=1, description="触发场景 (1 门诊挂号 ... 5 住院执行医嘱 ...)")
    fixmedins_code: OptText = Field(
        None,
        description="定点医药机构编号: the sending institution (the national "
        "message's field; when given it must be the API key's institution)",
    )
    rule_ids: Annotated[list[Text], BeforeValidator(lambda v: [] if v is None or v == "" else v)] = Field(
        default_factory=list, description="only these rules (empty: all)"
    )
    patient_dtos: Many[PatientDto] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any):
        # the whole national message: {"infno": "3101", ..., "input": {"data": {...}}}
        if isinstance(data, dict) and isinstance(data.get("input"), dict) and "trig_scen" not in data:
            inner = data["input"].get("data", data["input"])
            if isinstance(inner, dict) and data.get("fixmedins_code") is not None and "fixmedins_code" not in inner:
                inner = {**inner, "fixmedins_code": data["fixmedins_code"]}
            return inner
        return data


class JudgeResultDetailDto(BaseModel):
    jrd_id: str
    patn_id: str
    mdtrt_id: str
    rx_id: str = Field(description="the order's rx_id (or, for an earlier charge from the database, its bkkp_sn)")
    hilist_code: Optional[str] = None
    vola_item_type: Literal["1", "2"] = Field(description="1 违规项, 2 涉及项")
    vola_amt: float = Field(description="违规金额 (yuan, a number)")


class ResultRule(BaseModel):
    rule_id: str
    rule_name: str
    vola_evid: str = Field(description="the rule's basis")
    sev_deg: Literal["1", "2"]


class Result3101(BaseModel):
    jr_id: str
    rule_id: str
    rule_name: str
    vola_cont: str = Field(description="违规内容: the evidence, as on the post-hoc finding")
    patn_id: str
    mdtrt_id: str
    judge_result_detail_dtos: list[JudgeResultDetailDto]
    vola_amt: float = Field(description="违规金额 (yuan, a number)")
    vola_amt_stas: str = "1"
    sev_deg: Literal["1", "2"] = Field(description="1 明确违规 (violation), 2 高度可疑 (suspect)")
    vola_evid: str = Field(description="违规依据: the rule's basis")
    vola_bhvr_type: str = Field(description="违规行为分类: the rule's nature (问题性质)")
    task_id: str
    rules: list[ResultRule] = Field(
        description="extension: every rule that gave this alert (several rules giving the "
        "same alert on the same orders are one result; rule_id is the first)"
    )


class Output3101(BaseModel):
    result: list[Result3101]


class Response3101(BaseModel):
    infcode: int = 0
    err_msg: str = ""
    output: Output3101


class WarnDto(_In):
    warn_rslt_id: Text = Field(min_length=1, description="违规标识: the jr_id of a 3101 result")
    dspo_way: Literal["1", "2"] = Field(description="处理方式 1 继续执行医嘱, 2 返回修改医嘱")
    dspo_way_rea: Optional[Text] = Field(None, description="处理原因: required when dspo_way is 1")

    @model_validator(mode="after")
    def _reason(self):
        if self.dspo_way == "1" and not (self.dspo_way_rea or "").strip():
            raise ValueError(
                "dspo_way_rea is required when dspo_way is 1 (continue): the reason the senior doctor signed off"
            )
        return self


class Request3103(_In):
    """事前事中服务反馈服务 (3103) input."""

    warn_type: Literal["1", "2"] = Field("1", description="1 事前, 2 事中")
    warns: list[WarnDto] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any):
        if isinstance(data, dict) and isinstance(data.get("input"), dict) and "warns" not in data:
            return data["input"].get("data", data["input"])
        return data


class Response3103(BaseModel):
    infcode: int = 0
    err_msg: str = ""
    output: dict = Field(default_factory=dict)


# ---------------------------------------------------------------------------- mapping

_LIST_LV = {"1": "01", "2": "02", "3": "03", "01": "01", "02": "02", "03": "03"}


def _list_type(o: OrderDto) -> str:
    if o.hilist_type in ("101", "102", "201", "301"):
        return o.hilist_type
    # national code shapes: drugs X (western) / Z (Chinese patent), consumables C, the rest services
    c = o.hilist_code[:1].upper()
    return "101" if c in ("X", "Z") else "301" if c == "C" else "201"


def _v(x: Any) -> Any:
    """A field's value for the contract: "" is no value, a time with an offset is Asia/Shanghai local."""
    if x == "":
        return None
    if isinstance(x, dt.datetime):
        return _local(x)
    return x


def to_check_request(p: PatientDto, rule_ids: list[str]):
    """A 3101 patient (its current visit) -> :class:`medaudit.prealert.alerts.CheckRequest`."""
    from .alerts import CheckRequest

    e = p.current()
    visit = {
        "mdtrt_id": e.mdtrt_id,
        "psn_no": p.patn_id,
        "psn_name": p.patn_name,
        "gend": p.gend,
        "brdy": p.brdy,
        "insutype": e.insutype,
        "fixmedins_code": e.medins_id,
        "fixmedins_name": e.medins_name,
        "hosp_lv": e.medins_lv,
        "med_type": e.med_type,
        "begntime": e.adm_date,
        "endtime": e.dscg_date,
        "dscg_maindiag_code": e.dscg_main_dise_codg,
        "adm_dept_codg": e.adm_dept_codg,
        "dscg_dept_codg": e.dscg_dept_codg,
        "chfpdr_code": e.dr_codg,
    }
    visit = {k: _v(x) for k, x in visit.items()}
    diags = [
        {
            "mdtrt_id": e.mdtrt_id,
            "maindiag_flag": "1" if d.maindise_flag == "1" else "0",
            "diag_code": d.dise_codg,
            "diag_name": _v(d.dise_name),
        }
        for d in e.fsi_diagnose_dtos
    ]
    any_current = any(o.curr_drord_flag == "1" for o in e.fsi_order_dtos)
    orders = []
    for o in e.fsi_order_dtos:
        sumamt = _v(o.sumamt)
        orders.append(
            {
                "bkkp_sn": o.rx_id,
                "hilist_code": o.hilist_code,
                "hilist_name": _v(o.hilist_name),
                "list_type": _list_type(o),
                "chrgitm_lv": _LIST_LV.get(o.hilist_lv or ""),
                "med_chrgitm_type": _v(o.chrg_type),
                "cnt": o.cnt,
                "pric": o.pric,
                "det_item_fee_sumamt": sumamt if sumamt is not None else o.cnt * o.pric,
                "fulamt_ownpay_amt": _v(o.ownpay_amt),
                "fee_ocur_time": _v(o.drord_begn_date),
                "bilg_dept_codg": _v(o.drord_dept_codg),
                "bilg_dr_code": _v(o.drord_dr_codg),
                "hosp_appr_flag": "2" if o.self_paying_flag == "1" else None,
                "dscg_tkdrug_flag": "1" if o.drord_bhvr == "1" else None,
                "prd_days": _v(o.prd_days),
                "pric_uplmt_amt": _v(o.pric_uplmt_amt),
                "new": (o.curr_drord_flag == "1") if any_current else True,
            }
        )
    oprns = [
        {
            "mdtrt_id": e.mdtrt_id,
            "oprn_oprt_code": x.oprn_code,
            "oprn_oprt_name": _v(x.oprn_name),
            "oprn_oprt_date": _v(x.oprn_date),
            "main_oprn_flag": "1" if x.main_oprn_flag == "1" else "0",
        }
        for x in e.fsi_operation_dtos
    ]
    return CheckRequest(visit, orders, diags, rule_ids or None, operations=oprns)


__all__ = [
    "Request3101",
    "Response3101",
    "Result3101",
    "JudgeResultDetailDto",
    "Request3103",
    "Response3103",
    "to_check_request",
]
