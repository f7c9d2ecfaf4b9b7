"""The online feedback and appeal portal (``medaudit web``): server-rendered Chinese pages.

Hospital clerks (医院经办人员) see their institution's post-hoc findings by month with filters,
each with its evidence, lines, the doctor's pre-alert answer and the appeal deadline counting
down in working days; they appeal one or many with a reason and attachments, download the
appeal workbook, the deduction report and their statements, and read the decisions. Reviewers
(审核员, and administrators) work the queue (appealed findings and suspects), decide each with a
reason, and finalize a month's statements.

Every move goes through the library the command line uses (:func:`medaudit.hospital_loop.lifecycle.apply`,
:func:`medaudit.hospital_loop.deduct.finalize`, :mod:`medaudit.hospital_loop.appeals`, :mod:`medaudit.hospital_loop.report`), so the same
transition table, refusals and money rules apply, and the audit log names the signed-in user.

Isolation: a clerk's every query is bound to the clerk's institution; another institution's
finding, attachment, statement or report is "not found" (404), as if it did not exist. The
database connection is shared by the requests and used under one lock (DuckDB allows one
writing process per file; a reviewer's portal has little traffic).
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
import threading
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import duckdb
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import money, names
from ..hospital_loop import appeals, deduct, lifecycle, report
from ..prealert import store as prealert_store
from . import auth, files

HERE = Path(__file__).resolve().parent
COOKIE = "medaudit_session"
PRE_COOKIE = "medaudit_login"
_PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_FID = re.compile(r"[0-9a-f]{6,64}")

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: the deduction report page is self-contained: inline CSS and SVG, no script
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"


class Refused(Exception):
    """A form the library refused: the message is shown on the page, nothing changed."""


def _fmt_money(x) -> str:
    if x is None:
        return ""
    return f"{money.yuan(x):,.2f}"


def _num(x) -> str:
    if x is None:
        return ""
    s = f"{x:f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def create_app(
    con: duckdb.DuckDBPyConnection,
    files_dir: Path,
    *,
    secure_cookie: bool = False,
    session_hours: float = 8.0,
    max_login_failures: int = 5,
    login_window_minutes: float = 15.0,
    max_upload_bytes: int = files.MAX_BYTES,
    max_files: int = files.MAX_FILES,
) -> FastAPI:
    """The portal over an open (writable) database connection; uploads are kept in ``files_dir``."""
    auth.ensure_schema(con)
    key = auth.secret(con)
    files_dir = Path(files_dir)
    files_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.RLock()
    limiter = auth.LoginLimiter(max_login_failures, dt.timedelta(minutes=login_window_minutes))
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=_fmt_money,
        num=_num,
        status=lifecycle.status_label,
        status_cn=lambda s: lifecycle.STATUS_CN.get(s, s or ""),
        action=lifecycle.action_label,
    )
    env.globals.update(ROLES=auth.ROLES, STATUS_CN=lifecycle.STATUS_CN)
    max_body = max_files * max_upload_bytes + 1024 * 1024

    app = FastAPI(title="medaudit 医保审核申诉平台", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.con, app.state.lock, app.state.limiter = con, lock, limiter

    @contextmanager
    def db():
        with lock:
            yield con

    # ------------------------------------------------------------------ helpers

    def page(
        request: Request, template: str, status: int = 200, session: auth.Session | None = None, **ctx
    ) -> HTMLResponse:
        flash = ""
        if session is not None:
            with db() as c:
                flash = auth.pop_flash(c, session)
        html = env.get_template(template).render(
            request=request,
            s=session,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            flash=flash,
            **ctx,
        )
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})

    def session_of(request: Request) -> auth.Session | None:
        with db() as c:
            return auth.load_session(c, key, request.cookies.get(COOKIE))

    class _Login(Exception):
        pass

    def need(request: Request, *roles: str) -> auth.Session:
        s = session_of(request)
        if s is None:
            raise _Login()
        if roles and s.user.role not in roles:
            raise StarletteHTTPException(403, "无权访问此页面（角色不符）")
        return s

    async def form_of(request: Request, s: auth.Session | None, pre_token: str | None = None):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body:
            raise StarletteHTTPException(413, f"提交内容超过 {max_body // (1024 * 1024)} MB")
        form = await request.form(max_files=max_files + 1, max_fields=2000)
        token = form.get("csrf") or ""
        want = s.csrf if s is not None else pre_token
        import hmac as _hmac

        if not want or not isinstance(token, str) or not _hmac.compare_digest(token, want):
            raise StarletteHTTPException(403, "表单已失效或来源不明（CSRF 校验失败），请刷新页面后重试")
        return form

    def field(form, name: str, limit: int = 2000) -> str:
        v = form.get(name) or ""
        if not isinstance(v, str):
            raise Refused(f"字段 {name} 不是文本")
        v = v.strip()
        if len(v) > limit:
            raise Refused(f"字段 {name} 超过 {limit} 个字符")
        return v

    def finding_for(c, s: auth.Session, fid: str) -> lifecycle.FindingRef:
        """The finding when this user may see it, else 404 (another institution's is "not found")."""
        if not _FID.fullmatch(fid or ""):
            raise StarletteHTTPException(404, "没有这个疑点")
        rows = c.execute("SELECT finding_id FROM findings WHERE finding_id = ?", [fid]).fetchall()
        if not rows:
            raise StarletteHTTPException(404, "没有这个疑点")
        f = lifecycle.resolve(c, fid)
        if s.user.role == "clerk" and f.institution != s.user.institution:
            raise StarletteHTTPException(404, "没有这个疑点")
        return f

    def check_period(p: str | None, where: str = "period") -> str | None:
        p = (p or "").strip()
        if not p:
            return None
        if not _PERIOD.fullmatch(p):
            raise Refused(f"{where}：结算月份应写作 YYYY-MM，收到 {p!r}")
        return p

    def check_code(v: str | None, where: str) -> str | None:
        v = (v or "").strip()
        if not v:
            return None
        if not _CODE.fullmatch(v):
            raise Refused(f"{where}：编码只能含字母、数字和 _ . -，收到 {v[:40]!r}")
        return v

    def amount_of(v: str | None, where: str) -> Decimal | None:
        v = (v or "").strip()
        if not v:
            return None
        try:
            return money.parse_amount(v, where)
        except money.AmountError as e:
            raise Refused(str(e)) from None

    def periods_of(c, institution: str | None) -> list[str]:
        where, args = "stage = 'post_hoc' AND period IS NOT NULL", []
        if institution:
            where += " AND fixmedins_code = ?"
            args.append(institution)
        return [
            r[0]
            for r in c.execute(f"SELECT DISTINCT period FROM findings WHERE {where} ORDER BY 1 DESC", args).fetchall()
        ]

    def decorate(c, rows: list[dict], today: dt.date, s: auth.Session) -> list[dict]:
        nm = names.Names(c)
        second = lifecycle.settings(c)["second_appeal"] == "true"
        for r in rows:
            inst = r["fixmedins_code"]
            r["institution"] = nm.institution(inst)
            r["dept"] = nm.dept(inst, r["dept_code"])
            r["doctor"] = nm.doctor(inst, r["dr_code"])
            r["days_left"] = lifecycle.working_days_left(c, today, r["deadline"])
            ref = lifecycle.FindingRef(
                r["finding_id"],
                r["status"],
                inst,
                r["rule_id"],
                r["severity"],
                r["deadline"],
                r["appeal_round"],
                False,
                r["statement_id"],
            )
            r["appealable"] = (
                s.user.role == "clerk"
                and (r["status"] == "pending_appeal" or (second and r["status"] == "upheld"))
                and lifecycle.refusal(c, ref, "appeal", today) is None
            )
            w = r.get("waiting_since")
            r["waiting_days"] = (today - w.date()).days if w else None
        return rows

    def store_uploads(c, form) -> list[dict]:
        """The form's attachments, checked and stored; call under the database lock and, when the
        form is refused after all, :func:`discard` them (a refused form leaves no file behind)."""
        ups = [u for u in form.getlist("files") if isinstance(u, UploadFile) and (u.filename or "")]
        if len(ups) > max_files:
            raise Refused(f"附件最多 {max_files} 个，收到 {len(ups)} 个")
        out = []
        try:
            for u in ups:
                data = u.file.read(max_upload_bytes + 1)
                try:
                    out.append(files.store(files_dir, u.filename or "", data, max_upload_bytes).record())
                except files.UploadError as e:
                    raise Refused(str(e)) from None
        except BaseException:
            discard(c, out)
            raise
        return out

    def discard(c, records: list[dict]) -> None:
        """Remove the stored files of a refused form that no event of the audit log names."""
        for rec in records:
            named = c.execute(
                "SELECT count(*) FROM finding_events WHERE contains(attachments, ?)", [rec["sha256"]]
            ).fetchall()[0][0]
            if not named:
                files.path_of(files_dir, rec["sha256"]).unlink(missing_ok=True)

    # ------------------------------------------------------------------ errors

    @app.exception_handler(_Login)
    async def _to_login(request: Request, exc: _Login):
        return redirect("/login")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        where = "、".join(".".join(str(x) for x in e.get("loc", ())[1:]) or "?" for e in exc.errors()[:3])
        return page(
            request, "error.html", status=400, session=session_of(request), code=400, message=f"请求参数有误：{where}"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        s = session_of(request)
        text = exc.detail if isinstance(exc.detail, str) else "出错了"
        if exc.status_code == 404 and text == "Not Found":
            text = "页面不存在"
        resp = page(request, "error.html", status=exc.status_code, session=s, code=exc.status_code, message=text)
        if exc.status_code == 429 and exc.headers:
            resp.headers.update(exc.headers)
        return resp

    # ------------------------------------------------------------------ sign in and out

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        pre = request.cookies.get(PRE_COOKIE) or ""
        if not re.fullmatch(r"[A-Za-z0-9_\-]{32,64}", pre):
            import secrets

            pre = secrets.token_urlsafe(32)
        resp = page(request, "login.html", csrf_login=auth.sign(key, "login:" + pre))
        resp.set_cookie(PRE_COOKIE, pre, max_age=3600, httponly=True, samesite="strict", secure=secure_cookie, path="/")
        return resp

    @app.post("/login")
    async def login(request: Request):
        pre = request.cookies.get(PRE_COOKIE) or ""
        form = await form_of(request, None, auth.sign(key, "login:" + pre) if pre else None)
        username = (form.get("username") or "").strip()[:64] if isinstance(form.get("username"), str) else ""
        password = form.get("password") if isinstance(form.get("password"), str) else ""
        client = request.client.host if request.client else "?"
        keys = [f"user:{username.lower()}", f"ip:{client}"]
        wait = limiter.retry_after(keys)
        if wait:
            with db() as c:
                auth.log_login(c, username, client, "refused: rate limit")
            return page(
                request,
                "login.html",
                status=429,
                csrf_login=auth.sign(key, "login:" + pre),
                error=f"登录失败次数过多，请 {max(1, wait // 60)} 分钟后再试",
                username=username,
            )
        with db() as c:
            user = auth.authenticate(c, username, password)
            if user is None:
                limiter.failed(keys)
                auth.log_login(c, username, client, "failed")
                return page(
                    request,
                    "login.html",
                    status=401,
                    csrf_login=auth.sign(key, "login:" + pre),
                    error="用户名或密码错误，或账号已停用",
                    username=username,
                )
            limiter.succeeded(keys)
            cookie, _ = auth.new_session(c, key, user, session_hours)
            auth.log_login(c, username, client, "signed in")
        resp = redirect("/")
        resp.set_cookie(
            COOKIE,
            cookie,
            max_age=int(session_hours * 3600),
            httponly=True,
            samesite="strict",
            secure=secure_cookie,
            path="/",
        )
        resp.delete_cookie(PRE_COOKIE, path="/")
        return resp

    @app.post("/logout")
    async def logout(request: Request):
        s = need(request)
        await form_of(request, s)
        with db() as c:
            auth.end_session(c, s)
            auth.log_login(c, s.user.username, request.client.host if request.client else "?", "signed out")
        resp = redirect("/login")
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.get("/")
    def home(request: Request):
        s = need(request)
        return redirect("/h/findings" if s.user.role == "clerk" else "/r/queue")

    # ------------------------------------------------------------------ hospital side

    def list_args(request: Request):
        q = request.query_params
        return dict(
            rule=check_code(q.get("rule"), "规则编号"),
            dept=check_code(q.get("dept"), "科室编码"),
            doctor=check_code(q.get("doctor"), "医生编码"),
            min_amount=amount_of(q.get("min"), "金额下限"),
            max_amount=amount_of(q.get("max"), "金额上限"),
        )

    @app.get("/h/findings", response_class=HTMLResponse)
    def h_findings(request: Request):
        s = need(request, "clerk")
        inst = s.user.institution
        q = request.query_params
        error, rows = "", []
        with db() as c:
            lifecycle.expire_due(c)
            periods = periods_of(c, inst)
            try:
                period = check_period(q.get("period"), "结算月份") or (periods[0] if periods else None)
                status = (q.get("status") or "").strip()
                if status and status not in lifecycle.STATUS_CN:
                    raise Refused(f"状态：未知的状态 {status[:30]!r}")
                args = list_args(request)
                if period:
                    rows = lifecycle.queue(
                        c,
                        [status] if status else None,
                        institution=inst,
                        period=period,
                        stage="post_hoc",
                        sort=q.get("sort") or "default",
                        limit=2000,
                        **args,
                    )
            except (Refused, lifecycle.LifecycleError) as e:
                error, period = str(e), None
            rows = decorate(c, rows, lifecycle.wall_now().date(), s)
            # the doctor's answer to a pre-alert on the same rule, visit and item
            pre = prealert_store.evidence_for(c, [r["finding_id"] for r in rows])
            for r in rows:
                r["prealert"] = pre.get(r["finding_id"], "")
            statements = deduct.statements(c, period, inst) if period else []
            rules = c.execute(
                "SELECT DISTINCT rule_id, any_value(rule_name) FROM findings WHERE fixmedins_code = ? "
                "AND stage = 'post_hoc' GROUP BY 1 ORDER BY 1",
                [inst],
            ).fetchall()
            nm = names.Names(c)
            inst_name = nm.institution(inst)
        return page(
            request,
            "h_findings.html",
            session=s,
            rows=rows,
            periods=periods,
            period=period,
            q=q,
            error=error,
            statements=statements,
            rules=rules,
            inst_name=inst_name,
            max_files=max_files,
            max_mb=max_upload_bytes // (1024 * 1024),
            types=sorted(files.TYPES),
        )

    @app.post("/h/appeal")
    async def h_appeal(request: Request):
        s = need(request, "clerk")
        form = await form_of(request, s)
        ids = [x for x in form.getlist("finding_id") if isinstance(x, str) and x]
        back = (form.get("back") or "")[:500] if isinstance(form.get("back"), str) else ""
        if not re.fullmatch(r"/(h/findings|findings/[0-9a-f]{6,64})(\?[^\\\s]*)?", back):
            back = "/h/findings"  # only the portal's own pages (no open redirect)
        try:
            if not ids:
                raise Refused("请先勾选要申诉的疑点")
            reason = field(form, "reason", 2000)
            if not reason:
                raise Refused("请填写申诉理由")
            with db() as c:
                for fid in ids:
                    finding_for(c, s, fid)  # another institution's id is "not found" (404)
            with db() as c:  # stored and filed under the lock: a refused appeal leaves no file
                attachments = store_uploads(c, form)
                try:
                    moved = lifecycle.apply(
                        c, ids, "appeal", s.user.actor, reason, attachments, institution=s.user.institution
                    )
                except BaseException:
                    discard(c, attachments)
                    raise
                auth.set_flash(
                    c, s, f"已提交 {len(moved)} 条申诉" + (f"（附件 {len(attachments)} 个）" if attachments else "")
                )
        except (Refused, lifecycle.LifecycleError) as e:
            with db() as c:
                auth.set_flash(c, s, f"申诉未提交：{e}")
        return redirect(back)

    @app.get("/h/workbook")
    def h_workbook(request: Request, period: str = ""):
        s = need(request, "clerk")
        try:
            month = check_period(period, "结算月份")
        except Refused as e:
            raise StarletteHTTPException(400, str(e))
        if not month:
            raise StarletteHTTPException(400, "请给出结算月份 period=YYYY-MM")
        inst = s.user.institution
        assert inst is not None  # a clerk is bound to one institution (auth.create_user)
        with tempfile.TemporaryDirectory() as tmp, db() as c:
            out = Path(tmp) / "wb.xlsx"
            appeals.export_workbook(c, inst, month, out)
            data = out.read_bytes()
        return _download(data, f"申诉_{inst}_{month}.xlsx", "xlsx")

    # ------------------------------------------------------------------ both sides

    @app.get("/findings/{fid}", response_class=HTMLResponse)
    def finding_page(request: Request, fid: str):
        s = need(request)
        with db() as c:
            lifecycle.expire_due(c)
            f = finding_for(c, s, fid)
            cur = c.execute("SELECT * FROM findings WHERE finding_id = ?", [f.finding_id])
            row = dict(zip([d[0] for d in cur.description], cur.fetchall()[0]))
            st = c.execute(
                "SELECT window_opened, deadline, appeal_round, confirmed, statement_id FROM finding_state "
                "WHERE finding_id = ?",
                [f.finding_id],
            ).fetchall()
            window_opened, deadline, appeal_round, confirmed, statement_id = st[0] if st else (None,) * 5
            today = lifecycle.wall_now().date()
            nm = names.Names(c)
            inst = row["fixmedins_code"]
            row.update(
                institution=nm.institution(inst),
                dept=nm.dept(inst, row["dept_code"]),
                doctor=nm.doctor(inst, row["dr_code"]),
            )
            lines = lifecycle.lines_of(c, f.finding_id)
            events = lifecycle.history(c, f.finding_id)
            prealert = prealert_store.evidence_for(c, [f.finding_id]).get(f.finding_id, "")
            days_left = lifecycle.working_days_left(c, today, deadline)
            appealable = s.user.role == "clerk" and lifecycle.refusal(c, f, "appeal", today) is None
            decisions = []
            if s.user.is_bureau:
                decisions = [a for a in lifecycle.DECISION_ACTIONS if lifecycle.refusal(c, f, a, today) is None]
        return page(
            request,
            "finding.html",
            session=s,
            f=row,
            ref=f,
            deadline=deadline,
            days_left=days_left,
            appeal_round=appeal_round,
            confirmed=confirmed,
            statement_id=statement_id,
            lines=lines,
            events=events,
            prealert=prealert,
            appealable=appealable,
            decisions=decisions,
            max_files=max_files,
            max_mb=max_upload_bytes // (1024 * 1024),
            types=sorted(files.TYPES),
        )

    @app.get("/files/{fid}/{sha}")
    def attachment(request: Request, fid: str, sha: str):
        s = need(request)
        with db() as c:
            f = finding_for(c, s, fid)
            rec = None
            for e in lifecycle.history(c, f.finding_id):
                for a in e["attachments"]:
                    if a.get("sha256") == sha:
                        rec = a
        if rec is None:
            raise StarletteHTTPException(404, "没有这个附件")
        try:
            path = files.path_of(files_dir, sha)
        except files.UploadError:
            raise StarletteHTTPException(404, "没有这个附件")
        if not path.is_file():  # named in the log but not uploaded here (a command-line --attach)
            raise StarletteHTTPException(404, "附件只登记了摘要，文件不在本平台")
        ext = Path(rec.get("name", "")).suffix.lower()
        ctype = files.TYPES.get(ext, ("application/octet-stream",))[0]
        return _download(path.read_bytes(), rec.get("name") or sha, None, ctype)

    @app.get("/report")
    def report_page(request: Request, period: str = "", institution: str = "", format: str = "html"):
        s = need(request)
        try:
            month = check_period(period, "结算月份")
            inst = check_code(institution, "机构编码")
        except Refused as e:
            raise StarletteHTTPException(400, str(e))
        if s.user.role == "clerk":
            if inst and inst != s.user.institution:
                raise StarletteHTTPException(404, "没有这份报表")
            inst = s.user.institution
        if not month or not inst:
            raise StarletteHTTPException(400, "请给出机构编码和结算月份")
        if format not in ("html", "xlsx"):
            raise StarletteHTTPException(400, "format 只能是 html 或 xlsx")
        with db() as c:
            d = report.gather(c, inst, month)
        if format == "html":
            return HTMLResponse(report.render_html(d), headers={**PAGE_HEADERS, "Content-Security-Policy": REPORT_CSP})
        with tempfile.TemporaryDirectory() as tmp:
            out = report.write_xlsx(d, Path(tmp) / "r.xlsx")
            data = out.read_bytes()
        return _download(data, f"扣款依据报表_{inst}_{month}.xlsx", "xlsx")

    @app.get("/statements/{sid}.xlsx")
    def statement_xlsx(request: Request, sid: int):
        s = need(request)
        with db() as c:
            rows = c.execute(
                "SELECT fixmedins_code, period FROM deduction_statements WHERE statement_id = ?", [sid]
            ).fetchall()
            if not rows or (s.user.role == "clerk" and rows[0][0] != s.user.institution):
                raise StarletteHTTPException(404, "没有这张扣款单")
            with tempfile.TemporaryDirectory() as tmp:
                out = deduct.write_statement_xlsx(c, [sid], Path(tmp) / "s.xlsx")
                data = out.read_bytes()
        return _download(data, f"扣款单_{sid}_{rows[0][0]}_{rows[0][1]}.xlsx", "xlsx")

    # ------------------------------------------------------------------ reviewer side

    @app.get("/r/queue", response_class=HTMLResponse)
    def r_queue(request: Request):
        s = need(request, *auth.BUREAU_ROLES)
        q = request.query_params
        error, rows = "", []
        statuses = [x for x in q.getlist("status") if x] or ["appealed", "pending_review"]
        with db() as c:
            lifecycle.expire_due(c)
            try:
                rows = lifecycle.queue(
                    c,
                    statuses,
                    institution=check_code(q.get("institution"), "机构编码"),
                    period=check_period(q.get("period"), "结算月份"),
                    sort=q.get("sort") or "age",
                    limit=1000,
                    **list_args(request),
                )
            except (Refused, lifecycle.LifecycleError) as e:
                error = str(e)
            rows = decorate(c, rows, lifecycle.wall_now().date(), s)
            institutions = [
                r[0] for r in c.execute("SELECT DISTINCT fixmedins_code FROM findings ORDER BY 1").fetchall()
            ]
            periods = periods_of(c, None)
        return page(
            request,
            "r_queue.html",
            session=s,
            rows=rows,
            q=q,
            error=error,
            statuses=statuses,
            institutions=institutions,
            periods=periods,
        )

    @app.post("/r/findings/{fid}/decide")
    async def r_decide(request: Request, fid: str):
        s = need(request, *auth.BUREAU_ROLES)
        form = await form_of(request, s)
        with db() as c:
            f = finding_for(c, s, fid)
        try:
            decision = field(form, "decision", 20)
            if decision not in lifecycle.DECISION_ACTIONS:
                raise Refused(
                    f"决定：只能是 {'、'.join(lifecycle.action_label(a) for a in lifecycle.DECISION_ACTIONS)}"
                )
            reason = field(form, "reason", 2000)
            amount = amount_of(field(form, "amount", 40), "确认扣款金额") if decision == "confirm" else None
            with db() as c:
                attachments = store_uploads(c, form)
                try:
                    [(_, to)] = lifecycle.apply(
                        c, f.finding_id, decision, s.user.actor, reason, attachments, amount=amount
                    )
                except BaseException:
                    discard(c, attachments)
                    raise
                auth.set_flash(c, s, f"已{lifecycle.ACTION_CN[decision]}：状态改为 {lifecycle.status_label(to)}")
        except (Refused, lifecycle.LifecycleError) as e:
            with db() as c:
                auth.set_flash(c, s, f"未执行：{e}")
        return redirect(f"/findings/{f.finding_id}")

    @app.get("/r/finalize", response_class=HTMLResponse)
    def r_finalize_page(request: Request):
        s = need(request, *auth.BUREAU_ROLES)
        with db() as c:
            lifecycle.expire_due(c)
            periods = periods_of(c, None)
            counts = c.execute(
                """SELECT f.period, f.status, count(*) FROM findings f JOIN finding_state s USING (finding_id)
                   WHERE f.stage = 'post_hoc' AND s.statement_id IS NULL
                     AND f.status NOT IN ('overturned', 'dismissed', 'superseded', 'warning')
                   GROUP BY ALL ORDER BY 1 DESC, 2"""
            ).fetchall()
            nm = names.Names(c)
            sts = [(x, nm.institution(x.institution)) for x in deduct.statements(c)]
            institutions = [
                r[0] for r in c.execute("SELECT DISTINCT fixmedins_code FROM findings ORDER BY 1").fetchall()
            ]
        open_by_period: dict[str, list] = {}
        for p, st, n in counts:
            open_by_period.setdefault(p, []).append((st, n))
        return page(
            request,
            "r_finalize.html",
            session=s,
            periods=periods,
            open_by_period=open_by_period,
            statements=sts,
            institutions=institutions,
        )

    @app.post("/r/finalize")
    async def r_finalize(request: Request):
        s = need(request, *auth.BUREAU_ROLES)
        form = await form_of(request, s)
        try:
            period = check_period(field(form, "period", 10), "结算月份")
            if not period:
                raise Refused("请选择结算月份")
            inst = check_code(field(form, "institution", 64), "机构编码")
            with db() as c:
                res = deduct.finalize(c, period, inst, by=s.user.actor)
                msg = [f"{period} 结算完成：新扣款单 {len(res.statements)} 张"]
                msg += [
                    f"扣款单 {x.statement_id}（{x.institution}）{x.n_findings} 条疑点，合计 {_fmt_money(x.total)} 元"
                    for x in res.statements
                ]
                if res.expired_now:
                    msg.append(f"{res.expired_now} 条疑点逾期未申诉")
                if res.held:
                    msg.append(f"{len(res.held)} 条等待同一明细上的其他疑点结案")
                if res.not_final:
                    msg.append(
                        "尚未终结："
                        + "，".join(f"{lifecycle.STATUS_CN.get(k, k)} {v}" for k, v in res.not_final.items())
                    )
                auth.set_flash(c, s, "；".join(msg))
        except (Refused, deduct.DeductError, lifecycle.LifecycleError) as e:
            with db() as c:
                auth.set_flash(c, s, f"未结算：{e}")
        return redirect("/r/finalize")

    # ------------------------------------------------------------------ administrators: users

    @app.get("/admin/users", response_class=HTMLResponse)
    def admin_users(request: Request):
        s = need(request, "admin")
        with db() as c:
            users = auth.list_users(c)
            institutions = [
                r[0] for r in c.execute("SELECT DISTINCT fixmedins_code FROM findings ORDER BY 1").fetchall()
            ]
        return page(request, "admin_users.html", session=s, users=users, institutions=institutions)

    @app.post("/admin/users")
    async def admin_user_add(request: Request):
        s = need(request, "admin")
        form = await form_of(request, s)
        try:
            with db() as c:
                u = auth.add_user(
                    c,
                    field(form, "username", 64),
                    field(form, "role", 20),
                    form.get("password") if isinstance(form.get("password"), str) else "",
                    field(form, "display_name", 64),
                    check_code(field(form, "institution", 64), "机构编码"),
                    by=s.user.actor,
                )
                auth.set_flash(c, s, f"已添加用户 {u.username}（{u.role_cn}）")
        except (Refused, auth.UserError) as e:
            with db() as c:
                auth.set_flash(c, s, f"未添加：{e}")
        return redirect("/admin/users")

    @app.post("/admin/users/{username}/{what}")
    async def admin_user_active(request: Request, username: str, what: str):
        s = need(request, "admin")
        await form_of(request, s)
        if what not in ("disable", "enable"):
            raise StarletteHTTPException(404, "页面不存在")
        try:
            if what == "disable" and username == s.user.username:
                raise Refused("不能停用自己的账号")
            with db() as c:
                u = auth.set_active(c, username, what == "enable")
                auth.set_flash(c, s, f"用户 {u.username} 已{'启用' if u.active else '停用（已强制退出）'}")
        except (Refused, auth.UserError) as e:
            with db() as c:
                auth.set_flash(c, s, f"未执行：{e}")
        return redirect("/admin/users")

    return app


def _download(data: bytes, filename: str, kind: str | None, ctype: str | None = None) -> Response:
    ctype = ctype or {"xlsx": files.TYPES[".xlsx"][0]}.get(kind or "", "application/octet-stream")
    ascii_name = re.sub(r"[^A-Za-z0-9_.-]", "_", filename)
    return Response(
        data,
        media_type=ctype,
        headers={
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )
