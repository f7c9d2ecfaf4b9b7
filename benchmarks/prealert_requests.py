"""The 3101 request the pre-alert benchmarks send: one patient, one stay, 10 new orders.

``v`` is a stay as the benchmarks select it from ``mdtrt_d`` (mdtrt_id, psn_no, gend, brdy,
fixmedins_code, hosp_lv, med_type, insutype, begntime, dscg_maindiag_code); ``codes`` are the
orders' items; ``i`` numbers the request (its orders' ``rx_id``)."""

from __future__ import annotations


def body_3101(i: int, v: tuple, codes: list[str]) -> dict:
    orders = [
        {
            "rx_id": f"B{i}-{k}",
            "hilist_code": c,
            "hilist_name": "",
            "cnt": "1",
            "pric": "25.5",
            "sumamt": "25.5",
            "drord_begn_date": v[8],
            "drord_dept_codg": "D01",
            "drord_dr_codg": "DR01",
            "curr_drord_flag": 1,
        }
        for k, c in enumerate(codes)
    ]
    encounter = {
        "mdtrt_id": v[0],
        "medins_id": v[4],
        "medins_lv": v[5],
        "med_type": v[6],
        "insutype": v[7],
        "adm_date": v[8],
        "dscg_main_dise_codg": v[9] or "",
        "fsi_diagnose_dtos": [{"dise_codg": v[9], "maindise_flag": "1"}] if v[9] else [],
        "fsi_order_dtos": orders,
    }
    return {
        "trig_scen": "5",
        "patient_dtos": [
            {"patn_id": v[1], "gend": v[2], "brdy": v[3], "curr_mdtrt_id": v[0], "fsi_encounter_dtos": [encounter]}
        ],
    }
