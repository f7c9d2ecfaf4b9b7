"""The assessment as a workbook (one sheet per view) and one self-contained HTML page with
charts (ranking, composition by nature, trend). Workbooks go through :mod:`medaudit.xlsx`
(text stays text, the file appears only whole); the page reuses the deduction report's
styles and SVG charts (no script, no external resource)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb

from .. import names, xlsx
from ..hospital_loop.report import _CSS, _e, _hbar_svg, _table, _trend_svg, fmt
from .assess import Assessment
from .scheme import MEASURES

LEVEL_CN = {3: "三级", 2: "二级", 1: "一级", 0: "未定级"}
PALETTE = ("#2e75b6", "#c55a11", "#548235", "#7030a0", "#b42318", "#bf9000", "#5f6b7a", "#1f9aa8")


def _fmt_measure(v) -> str:
    return "—" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))


def ranking_rows(a: Assessment, nm: names.Names) -> list[list]:
    return [
        [
            r.rank,
            r.n_in_level,
            LEVEL_CN.get(r.level, str(r.level)),
            nm.institution(r.code),
            r.score,
            r.grade,
            "是" if r.vetoed else "否",
            "；".join(f"{v[0]} {v[1]}" for v in r.vetoes),
            r.measures["violations"],
            r.measures["violation_amount"],
            r.measures["deductions"],
            r.measures["fund_pay"],
            r.measures["per_10k_fund"],
            r.measures["deduction_rate"],
            r.measures["appeals_filed"],
            r.measures["appeals_won"],
            r.measures["tips_founded"],
        ]
        for r in a.results
    ]


RANK_HEAD = [
    "级内排名",
    "同级机构数",
    "级别",
    "机构",
    "得分",
    "等级",
    "一票否决",
    "否决事项",
    "违规数",
    "违规金额（元）",
    "扣款金额（元）",
    "基金支付（元）",
    "每万元基金违规金额",
    "扣款率",
    "申诉数",
    "申诉成立数",
    "举报属实数",
]


def write_xlsx(a: Assessment, con: duckdb.DuckDBPyConnection, path: Path) -> Path:
    path = Path(path)
    nm = names.Names(con)
    wb = xlsx.workbook(path)
    head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True})
    cells = xlsx.Cells(wb)

    def sheet(name, cols, rows, kinds=None, widths=None):
        ws = wb.add_worksheet(name)
        for j, c in enumerate(cols):
            ws.write_string(0, j, c, head)
            ws.set_column(j, j, (widths or {}).get(j, 14))
        for i, r in enumerate(rows, 1):
            cells.row(ws, i, [None if v is None else v for v in r], kinds)
        ws.freeze_panes(1, 0)

    sheet("考核结果", RANK_HEAD, ranking_rows(a, nm), kinds={12: "price", 13: "qty"}, widths={3: 28, 7: 30})
    sheet(
        "按性质",
        ["机构"] + [f"{n} 违规数" for n in a.natures] + [f"{n} 扣款（元）" for n in a.natures],
        [
            [nm.institution(r.code)]
            + [r.measures[f"count.{n}"] for n in a.natures]
            + [r.measures[f"amount.{n}"] for n in a.natures]
            for r in a.results
        ],
        widths={0: 28},
    )
    sheet(
        "月度趋势",
        ["机构", "月份", "违规数", "违规金额（元）", "扣款金额（元）", "基金支付（元）"],
        [
            [nm.institution(r.code), p, m["violations"], m["violation_amount"], m["deductions"], m["fund_pay"]]
            for r in a.results
            for p, m in sorted(r.monthly.items())
        ],
        widths={0: 28},
    )
    ind = a.scheme.indicators
    sheet(
        "指标得分",
        ["机构"] + [f"{i.id} {i.name}（{i.weight}分）" for i in ind] + ["得分"],
        [[nm.institution(r.code)] + [r.points[i.id] for i in ind] + [r.score] for r in a.results],
        widths={0: 28},
    )
    sheet(
        "一票否决",
        ["机构", "否决事项编号", "否决事项", "取值", "触发的疑点编号"],
        [
            [nm.institution(r.code), vid, vname, _fmt_measure(val), fid]
            for r in a.results
            for vid, vname, val, fids in r.vetoes
            for fid in (fids or [""])
        ],
        widths={0: 28, 2: 30, 4: 36},
    )
    s = a.scheme
    rows = [
        ["方案", s.name],
        ["版本", s.version],
        ["SHA-256", s.hash],
        ["考核期", a.label],
        ["结果 SHA-256", a.result_hash],
        ["运行编号", "" if a.run_id is None else str(a.run_id)],
    ]
    rows += [
        [
            f"指标 {i.id}",
            f"{i.name}: {i.measure}（{MEASURES[i.measure]}），权重 {i.weight}，"
            f"{i.full_at} 得满分，{i.zero_at} 得 0 分，其间线性",
        ]
        for i in ind
    ]
    rows += [[f"等级 {g}", f"得分 ≥ {m}"] for g, m in s.grades]
    rows += [[f"否决 {v.id}", f"{v.name}: {v.measure} {v.op} {v.value} → {s.veto_grade}"] for v in s.vetoes]
    sheet("考核方案", ["项目", "内容"], rows, widths={0: 16, 1: 90})
    wb.close()
    return path


def _stacked_svg(rows: list[tuple[str, list[Decimal]]], natures: list[str], title: str, width: int = 1180) -> str:
    """One horizontal bar per institution, split by nature (deductions)."""
    rows = [r for r in rows if sum(r[1], Decimal(0)) > 0][:15]
    if not rows:
        return f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="40"><text x="0" y="24">无数据</text></svg>'
    top = max(sum(v, Decimal(0)) for _, v in rows)
    label_w, row_h, bar_max = 260, 24, width - 260 - 110
    h = row_h * len(rows) + 40
    out = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{h}" viewBox="0 0 {width} {h}">']
    for i, (name, vals) in enumerate(rows):
        y, x = 5 + i * row_h, float(label_w)
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{_e(name[:22])}</text>')
        for k, v in enumerate(vals):
            w = float(v / top) * bar_max if top else 0
            if w > 0:
                out.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
                    f'fill="{PALETTE[k % len(PALETTE)]}"><title>{_e(natures[k])} {fmt(v)}</title></rect>'
                )
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + 15}" font-size="12">{fmt(sum(vals, Decimal(0)))}</text>')
    y = h - 20
    for k, n in enumerate(natures):
        out.append(
            f'<rect x="{label_w + k * 120}" y="{y}" width="12" height="12" fill="{PALETTE[k % len(PALETTE)]}"/>'
            f'<text x="{label_w + k * 120 + 16}" y="{y + 11}" font-size="12">{_e(n)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def render_html(a: Assessment, con: duckdb.DuckDBPyConnection) -> str:
    nm = names.Names(con)
    s = a.scheme
    vetoed = [r for r in a.results if r.vetoed]
    cards = [
        ("参评机构", f"{len(a.results):,}"),
        ("一票否决", f"{len(vetoed):,}"),
        ("违规数", f"{sum(r.measures['violations'] for r in a.results):,}"),
        ("扣款金额（元）", fmt(sum((r.measures["deductions"] for r in a.results), Decimal(0)))),
        ("基金支付（元）", fmt(sum((r.measures["fund_pay"] for r in a.results), Decimal(0)))),
    ]
    cards_html = "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>' for k, v in cards
    )
    rank_charts = []
    for lv in sorted({r.level for r in a.results}, reverse=True):
        items = [
            (f"{r.rank}. {nm.institution(r.code)}{' ✕否决' if r.vetoed else ''}", r.score)
            for r in a.results
            if r.level == lv
        ]
        # the chart holds 12 bars: with more institutions, the last 12 of the level (where supervision looks)
        note = f"（末 12 名，共 {len(items)} 家）" if len(items) > 12 else ""
        rank_charts.append(
            f"<div><h2>{LEVEL_CN.get(lv, lv)}机构得分排名{note}</h2>{_hbar_svg(items[-12:], f'{lv} 级得分排名')}</div>"
        )
    comp = _stacked_svg(
        sorted(
            ((nm.institution(r.code), [r.measures[f"amount.{n}"] for n in a.natures]) for r in a.results),
            key=lambda x: (-sum(x[1], Decimal(0)), x[0]),
        ),
        a.natures,
        "扣款构成（按问题性质）",
    )
    months = sorted({p for r in a.results for p in r.monthly})
    trend = [
        (
            p,
            sum(r.monthly[p]["violations"] for r in a.results),
            sum((r.monthly[p]["violation_amount"] for r in a.results), Decimal(0)),
            sum((r.monthly[p]["deductions"] for r in a.results), Decimal(0)),
        )
        for p in months
    ]
    ranking = _table(RANK_HEAD, ranking_rows(a, nm), num={0, 1, 4, 8, 9, 10, 11, 14, 15, 16})
    veto_rows = [
        [nm.institution(r.code), f"{vid} {vname}", _fmt_measure(val), "、".join(f[:12] for f in fids) or "—"]
        for r in vetoed
        for vid, vname, val, fids in r.vetoes
    ]
    vetoes = _table(["机构", "否决事项", "取值", "触发的疑点编号"], veto_rows) if veto_rows else "<p>无。</p>"
    scheme_rows = [[i.id, i.name, i.measure, str(i.weight), str(i.full_at), str(i.zero_at)] for i in s.indicators]
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>医保基金使用考核 {_e(a.label)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><header><h1>定点医疗机构医保基金使用考核 {_e(a.label)}</h1>
<p>方案：{_e(s.name)} 版本 {_e(s.version)} ｜ 方案 SHA-256 {_e(s.hash[:16])}… ｜ 结果 SHA-256 {_e(a.result_hash[:16])}…</p></header>
<main>
<div class="cards">{cards_html}</div>
<section class="charts">{"".join(rank_charts)}</section>
<section><h2>扣款构成（按问题性质）</h2>{comp}</section>
<section><h2>月度趋势（全部机构扣款金额）</h2>{_trend_svg(trend, "月度趋势")}</section>
<section><h2>一票否决</h2>{vetoes}</section>
<section><h2>考核结果</h2><div class="scroll">{ranking}</div>
<p class="note">违规：列入扣款单的疑点（终结）；排名：同级机构内，未被否决者在前，得分高者在前，同分同名次。</p></section>
<section><h2>考核方案</h2>{_table(["编号", "指标", "度量", "权重", "满分值", "零分值"], scheme_rows)}
<p class="note">等级：{_e("；".join(f"{g} ≥ {m}" for g, m in s.grades))}；一票否决：{_e("；".join(f"{v.name}（{v.measure} {v.op} {v.value}）" for v in s.vetoes))} → {_e(s.veto_grade)}</p></section>
</main></body></html>
"""


def write_html(a: Assessment, con: duckdb.DuckDBPyConnection, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(a, con), encoding="utf-8")
    tmp.replace(path)
    return path
