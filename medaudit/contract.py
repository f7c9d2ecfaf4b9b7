"""The data contract (../shared/spec/data-contract.md) as data.

Every table a batch may hold, with its national column names, the type of each column and
whether it is required. The loader, the sample generator and the docs all read this one
definition, so a column added here is loaded, generated and documented alike.
"""

from __future__ import annotations

from dataclasses import dataclass

# Column types of the contract.
STR, DATE, TS, DEC, INT = "str", "date", "ts", "dec", "int"

#: DuckDB type used to store each contract type. Amounts and quantities are exact decimals.
SQL_TYPE = {
    STR: "VARCHAR",
    DATE: "DATE",
    TS: "TIMESTAMP",
    DEC: "DECIMAL(18,4)",
    INT: "INTEGER",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    required: bool = False  # must the batch contain this table?
    key: tuple[str, ...] = ()  # natural key: unique within the batch and across batches in one database
    parents: tuple[tuple[str, str, str], ...] = ()  # (column, parent table, parent column)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _cols(spec: str) -> tuple[Column, ...]:
    """Parse 'name:type[!]' words; '!' marks a required column."""
    out = []
    for word in spec.split():
        name, typ = word.split(":")
        req = typ.endswith("!")
        out.append(Column(name, typ.rstrip("!"), req))
    return tuple(out)


TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table(
            "mdtrt_d",
            _cols(
                "mdtrt_id:str! psn_no:str! psn_name:str certno:str gend:str! brdy:date! "
                "insutype:str! fixmedins_code:str! fixmedins_name:str hosp_lv:str! med_type:str! "
                "begntime:ts! endtime:ts dscg_maindiag_code:str adm_dept_codg:str "
                "dscg_dept_codg:str chfpdr_code:str dscg_way:str die_date:date ipt_days:int"
            ),
            required=True,
            key=("mdtrt_id",),
        ),
        Table(
            "setl_d",
            _cols(
                "setl_id:str! mdtrt_id:str! psn_no:str! fixmedins_code:str! setl_time:ts! "
                "medfee_sumamt:dec! fund_pay_sumamt:dec! hifp_pay:dec fulamt_ownpay_amt:dec "
                "inscp_amt:dec refd_setl_flag:str"
            ),
            required=True,
            key=("setl_id",),
            parents=(("mdtrt_id", "mdtrt_d", "mdtrt_id"),),
        ),
        Table(
            "fee_list_d",
            _cols(
                "bkkp_sn:str! mdtrt_id:str! setl_id:str psn_no:str! fixmedins_code:str! "
                "fee_ocur_time:ts! hilist_code:str! hilist_name:str medins_list_codg:str "
                "medins_list_name:str list_type:str! med_chrgitm_type:str chrgitm_lv:str "
                "cnt:dec! pric:dec! det_item_fee_sumamt:dec! pric_uplmt_amt:dec "
                "fulamt_ownpay_amt:dec inscp_amt:dec bilg_dept_codg:str bilg_dr_code:str "
                "hosp_appr_flag:str dscg_tkdrug_flag:str prd_days:dec init_feedetl_sn:str"
            ),
            required=True,
            key=("bkkp_sn",),
            parents=(("mdtrt_id", "mdtrt_d", "mdtrt_id"),),
        ),
        Table(
            "setl_list_diag_d",
            _cols("mdtrt_id:str! setl_id:str diag_type:str maindiag_flag:str! diag_code:str! diag_name:str"),
            key=("mdtrt_id", "diag_code", "diag_type"),
            parents=(("mdtrt_id", "mdtrt_d", "mdtrt_id"),),
        ),
        Table(
            "setl_list_oprn_d",
            _cols("mdtrt_id:str! oprn_oprt_code:str! oprn_oprt_name:str oprn_oprt_date:ts main_oprn_flag:str"),
            key=("mdtrt_id", "oprn_oprt_code", "oprn_oprt_date"),
            parents=(("mdtrt_id", "mdtrt_d", "mdtrt_id"),),
        ),
        # Knowledge tables
        Table("psn_death", _cols("psn_no:str! die_date:date!"), key=("psn_no",)),
        Table(
            "purchases",
            _cols("fixmedins_code:str! hilist_code:str! period:str! purchase_cnt:dec! opening_stock_cnt:dec"),
            key=("fixmedins_code", "hilist_code", "period"),
        ),
        Table(
            "hilist",
            _cols(
                "hilist_code:str! hilist_name:str list_type:str chrgitm_lv:str lv1_pric:dec "
                "lv2_pric:dec lv3_pric:dec begndate:date enddate:date"
            ),
            key=("hilist_code", "begndate"),
        ),
        # Names of the codes the extracts carry without names (departments, doctors, institutions),
        # for workbooks and reports only: screening never reads it. ``kind`` is one of NAME_KINDS;
        # an empty ``fixmedins_code`` makes the name hold for every institution (institutions
        # themselves, a bureau-wide department dictionary), a filled one for that institution only
        # (its own department and doctor codes), which wins over the bureau-wide name.
        Table(
            "code_names",
            _cols("kind:str! code:str! code_name:str! fixmedins_code:str"),
            key=("kind", "code", "fixmedins_code"),
        ),
    ]
}

#: what ``code_names.kind`` may say: the code is a department, a doctor or an institution
NAME_KINDS = ("dept", "doctor", "institution")

#: Load order: parents before children, so orphan checks can see this batch's parents.
LOAD_ORDER = [
    "mdtrt_d",
    "setl_d",
    "fee_list_d",
    "setl_list_diag_d",
    "setl_list_oprn_d",
    "psn_death",
    "purchases",
    "hilist",
    "code_names",
]

FILE_SUFFIXES = (".csv", ".parquet", ".xlsx")

#: Free-text columns kept exactly as written; every other column is NFKC-normalised on load
#: (full-width digits and letters become ASCII: ``１２３.００`` -> ``123.00``).
FREE_TEXT = frozenset(c.name for t in TABLES.values() for c in t.columns if c.name.endswith("_name"))
