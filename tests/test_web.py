"""The web portal (medaudit web) through FastAPI's TestClient: sign-in, isolation between
institutions, CSRF, session expiry, login limits, roles, uploads, and the whole loop (a clerk
appeals two findings with an attachment, a reviewer overturns one and upholds the other, the
month is finalized, the statement and the report show both outcomes and reasons)."""

from __future__ import annotations

import hashlib
import io
import re
import shutil

import openpyxl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medaudit import db
from medaudit.hospital_loop import lifecycle
from medaudit.cli import app as cli_app
from medaudit.web import auth
from medaudit.web.app import COOKIE, create_app
from kit import set_wall_clock
from test_lifecycle import finding, loop_batch, loop_db

PW = "correct horse 1"
PDF = b"%PDF-1.4 scanned progress notes\n%%EOF"


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


def login(client: TestClient, username: str, password: str = PW, expect: int = 303):
    page = client.get("/login")
    r = client.post(
        "/login", data={"csrf": csrf_of(page.text), "username": username, "password": password}, follow_redirects=False
    )
    assert r.status_code == expect, r.text[:500]
    return r


@pytest.fixture(scope="module")
def portal_db(tmp_path_factory):
    """The screened database with its four users, made once; each test works on a copy."""
    folder = tmp_path_factory.mktemp("portal")
    b, v = loop_batch()
    with pytest.MonkeyPatch.context() as mp:
        con = loop_db(folder, mp, b)  # screened on 2026-04-01: windows close 2026-04-15
        auth.ensure_schema(con)
        auth.add_user(con, "wangfang", "clerk", PW, "王芳", "H001")
        auth.add_user(con, "qian", "clerk", PW, "钱会计", "H002")
        auth.add_user(con, "li", "reviewer", PW, "李审")
        auth.add_user(con, "boss", "admin", PW, "赵科长")
        con.close()
    return folder / "loop.duckdb", v


@pytest.fixture
def portal(tmp_path, monkeypatch, portal_db):
    src, v = portal_db
    shutil.copy(src, tmp_path / "loop.duckdb")
    set_wall_clock(monkeypatch, "2026-04-01")
    con = db.connect(tmp_path / "loop.duckdb")
    app = create_app(con, tmp_path / "files", max_upload_bytes=64 * 1024)
    ids = {
        k: finding(con, v[k[0]], k[1])["id"]
        for k in [
            ("sex", "R-SEX-001"),
            ("bed", "R-FRQ-001"),
            ("both", "R-SEX-001"),
            ("both", "R-FRQ-001"),
            ("age", "R-AGE-001"),
            ("other", "R-SEX-001"),
        ]
    }

    class P:
        pass

    p = P()
    p.con, p.app, p.tmp, p.monkeypatch = con, app, tmp_path, monkeypatch
    p.sex, p.bed = ids[("sex", "R-SEX-001")], ids[("bed", "R-FRQ-001")]
    p.age, p.other = ids[("age", "R-AGE-001")], ids[("other", "R-SEX-001")]
    p.client = lambda: TestClient(app, base_url="http://testserver")
    return p


def status_of(con, fid):
    return con.execute("SELECT status FROM findings WHERE finding_id = ?", [fid]).fetchall()[0][0]


def n_events(con):
    return con.execute("SELECT count(*) FROM finding_events").fetchall()[0][0]


def appeal(client, ids, reason="理由", files=(), csrf=None):
    page = client.get("/h/findings?period=2026-03")
    data = {
        "csrf": csrf if csrf is not None else csrf_of(page.text),
        "finding_id": list(ids),
        "reason": reason,
        "back": "/h/findings?period=2026-03",
    }
    return client.post("/h/appeal", data=data, files=[("files", f) for f in files], follow_redirects=False)


def decide(client, fid, decision, reason, amount=""):
    page = client.get(f"/findings/{fid}")
    assert page.status_code == 200
    return client.post(
        f"/r/findings/{fid}/decide",
        data={"csrf": csrf_of(page.text), "decision": decision, "reason": reason, "amount": amount},
        follow_redirects=False,
    )


# ---------------------------------------------------------------------------- the whole loop


def test_the_whole_loop_in_the_portal(portal):
    p = portal
    clerk = p.client()
    login(clerk, "wangfang")
    page = clerk.get("/h/findings")
    assert page.status_code == 200 and "测试医院 (H001)" in page.text
    # five findings of H001 (the suspect too), none of H002; the deadline counts down in working days
    assert p.other not in page.text
    assert len(re.findall(r'data-finding="', page.text)) == 5
    assert "2026-04-15" in page.text and "剩 10 个工作日" in page.text  # Apr 2..15, both ends counted
    # filters: a rule, an amount range
    assert len(re.findall(r'data-finding="', clerk.get("/h/findings?period=2026-03&rule=R-FRQ-001").text)) == 2
    assert len(re.findall(r'data-finding="', clerk.get("/h/findings?period=2026-03&min=100").text)) == 2

    # the clerk appeals two findings at once with a scanned record
    r = appeal(
        clerk,
        [p.sex, p.bed],
        "患者为女性，HIS 登记错误；两张床位费为不同床位",
        [("病程记录.pdf", PDF, "application/pdf")],
    )
    assert r.status_code == 303
    assert "已提交 2 条申诉（附件 1 个）" in clerk.get(r.headers["location"]).text
    assert status_of(p.con, p.sex) == status_of(p.con, p.bed) == "appealed"
    ev = lifecycle.history(p.con, p.sex)[-1]
    sha = hashlib.sha256(PDF).hexdigest()
    assert ev["actor"] == "王芳 (wangfang)" and ev["action"] == "appeal"
    assert ev["attachments"] == [{"name": "病程记录.pdf", "sha256": sha, "bytes": len(PDF), "type": "application/pdf"}]
    assert (p.tmp / "files" / sha[:2] / sha).read_bytes() == PDF  # stored under its content hash
    got = clerk.get(f"/files/{p.sex}/{sha}")
    assert got.status_code == 200 and got.content == PDF and "attachment" in got.headers["content-disposition"]

    # the reviewer's queue: the two appeals and the suspect, largest amount first when asked
    rev = p.client()
    login(rev, "li")
    q = rev.get("/r/queue?sort=amount")
    order = re.findall(r'data-finding="([0-9a-f]+)"', q.text)
    assert order == [p.sex, p.bed, p.age]  # 180.00, 30.00, 24.70
    assert "两张床位费为不同床位" in q.text
    fp = rev.get(f"/findings/{p.sex}")
    assert "病程记录.pdf" in fp.text and "患者性别为男" in fp.text and 'id="decision-overturn"' in fp.text
    assert rev.get(f"/files/{p.sex}/{sha}").content == PDF
    assert decide(rev, p.sex, "overturn", "病历证实患者为女性，编码登记错误").status_code == 303
    assert decide(rev, p.bed, "uphold", "同日两次床位费无转床记录").status_code == 303
    assert (status_of(p.con, p.sex), status_of(p.con, p.bed)) == ("overturned", "upheld")
    assert lifecycle.history(p.con, p.bed)[-1]["actor"] == "李审 (li)"
    # the clerk sees the decisions and reasons
    text = clerk.get("/h/findings?period=2026-03").text
    assert "撤销扣款 (overturn)：病历证实患者为女性，编码登记错误" in text
    assert "驳回申诉 (uphold)：同日两次床位费无转床记录" in text

    # after the deadline the month is finalized by the reviewer
    set_wall_clock(p.monkeypatch, "2026-04-16")  # (a new day: both sign in again)
    login(rev, "li")
    login(clerk, "wangfang")
    fin = rev.get("/r/finalize")
    r = rev.post(
        "/r/finalize", data={"csrf": csrf_of(fin.text), "period": "2026-03", "institution": ""}, follow_redirects=False
    )
    assert r.status_code == 303
    flash = rev.get("/r/finalize").text
    assert "2026-03 结算完成：新扣款单 2 张" in flash
    sid = p.con.execute("SELECT statement_id FROM deduction_statements WHERE fixmedins_code = 'H001'").fetchall()[0][0]
    items = dict(
        p.con.execute("SELECT finding_id, status FROM deduction_items WHERE statement_id = ?", [sid]).fetchall()
    )
    assert items[p.bed] == "upheld" and p.sex not in items
    assert p.con.execute(
        "SELECT actor FROM finding_events WHERE finding_id = ? AND action = 'finalize'", [p.bed]
    ).fetchall() == [("李审 (li)",)]

    # the statement and the report, downloaded by the clerk, show both outcomes and reasons
    st = clerk.get(f"/statements/{sid}.xlsx")
    assert st.status_code == 200
    cells = " ".join(
        str(c.value)
        for ws in openpyxl.load_workbook(io.BytesIO(st.content)).worksheets
        for row in ws.iter_rows()
        for c in row
        if c.value is not None
    )
    assert "同日两次床位费无转床记录" in cells and "两张床位费为不同床位" in cells
    rep = clerk.get("/report?period=2026-03")
    assert rep.status_code == 200 and "script-src" not in rep.headers["content-security-policy"]
    assert "撤销扣款 (overturn)：病历证实患者为女性，编码登记错误" in rep.text
    assert "驳回申诉 (uphold)：同日两次床位费无转床记录" in rep.text
    assert "扣款单" in rep.text
    xl = clerk.get("/report?period=2026-03&format=xlsx")
    cells = " ".join(
        str(c.value)
        for ws in openpyxl.load_workbook(io.BytesIO(xl.content)).worksheets
        for row in ws.iter_rows()
        for c in row
        if c.value is not None
    )
    assert "病历证实患者为女性" in cells and "同日两次床位费无转床记录" in cells
    wb = clerk.get("/h/workbook?period=2026-03")
    assert wb.status_code == 200 and openpyxl.load_workbook(io.BytesIO(wb.content))["说明"]["B1"].value == "H001"


# ---------------------------------------------------------------------------- isolation


def test_a_clerk_never_sees_another_institutions_finding_attachment_statement_or_report(portal):
    p = portal
    other = p.client()
    login(other, "qian")
    r = appeal(other, [p.other], "本院有病历", [("检查单.png", b"\x89PNG\r\n\x1a\n" + b"x" * 50, "image/png")])
    assert r.status_code == 303 and status_of(p.con, p.other) == "appealed"
    sha = hashlib.sha256(b"\x89PNG\r\n\x1a\n" + b"x" * 50).hexdigest()
    assert other.get(f"/files/{p.other}/{sha}").status_code == 200
    set_wall_clock(p.monkeypatch, "2026-04-16")
    lifecycle.apply(p.con, p.other, "uphold", "李审", "不成立")
    from medaudit.hospital_loop import deduct

    deduct.finalize(p.con, "2026-03")
    sid2 = p.con.execute("SELECT statement_id FROM deduction_statements WHERE fixmedins_code = 'H002'").fetchall()[0][0]

    c = p.client()
    login(c, "wangfang")
    before = n_events(p.con)
    for url in (
        f"/findings/{p.other}",
        f"/files/{p.other}/{sha}",
        f"/files/{p.sex}/{sha}",
        "/report?period=2026-03&institution=H002",
        "/report?period=2026-03&institution=H002&format=xlsx",
        f"/statements/{sid2}.xlsx",
        f"/findings/{p.other[:10]}",
    ):
        r = c.get(url)
        assert r.status_code == 404, url
        assert "本院有病历" not in r.text and "H002" not in r.text.replace("institution=H002", "")
    # appealing another institution's finding by id: 404, nothing filed
    r = appeal(c, [p.other], "试图申诉别家的")
    assert r.status_code == 404 and n_events(p.con) == before
    # and a mix of own and foreign ids files nothing either
    r = appeal(c, [p.age, p.other], "混合")
    assert r.status_code == 404 and n_events(p.con) == before
    # its own report stays its own even when asked for by its own code
    assert c.get("/report?period=2026-03&institution=H001").status_code == 200


def test_wrong_role_is_refused(portal):
    p = portal
    c = p.client()
    login(c, "wangfang")
    assert c.get("/r/queue").status_code == 403
    assert c.get("/r/finalize").status_code == 403
    page = c.get("/h/findings")
    r = c.post(f"/r/findings/{p.sex}/decide", data={"csrf": csrf_of(page.text), "decision": "overturn", "reason": "x"})
    assert r.status_code == 403 and status_of(p.con, p.sex) == "pending_appeal"
    r = c.post("/r/finalize", data={"csrf": csrf_of(page.text), "period": "2026-03"})
    assert r.status_code == 403
    rev = p.client()
    login(rev, "li")
    assert rev.get("/h/findings").status_code == 403
    q = rev.get("/r/queue")
    r = rev.post("/h/appeal", data={"csrf": csrf_of(q.text), "finding_id": p.sex, "reason": "x"})
    assert r.status_code == 403 and status_of(p.con, p.sex) == "pending_appeal"
    admin = p.client()
    login(admin, "boss")
    assert admin.get("/r/queue").status_code == 200
    # not signed in: every page leads to the login page
    anon = p.client()
    for url in ("/", "/h/findings", "/r/queue", f"/findings/{p.sex}", "/report?period=2026-03&institution=H001"):
        r = anon.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login", url


# ---------------------------------------------------------------------------- CSRF, sessions, login limits


def test_forms_without_the_sessions_csrf_token_are_refused(portal):
    p = portal
    c = p.client()
    login(c, "wangfang")
    before = n_events(p.con)
    for token in ("", "forged", None):
        data = {"finding_id": p.sex, "reason": "x"}
        if token is not None:
            data["csrf"] = token
        r = c.post("/h/appeal", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    # another session's token does not do either
    other = p.client()
    login(other, "wangfang")
    r = appeal(c, [p.sex], csrf=csrf_of(other.get("/h/findings").text))
    assert r.status_code == 403
    assert n_events(p.con) == before and status_of(p.con, p.sex) == "pending_appeal"
    # logout and login need their tokens too
    assert c.post("/logout", data={}).status_code == 403
    fresh = p.client()
    r = fresh.post("/login", data={"username": "wangfang", "password": PW}, follow_redirects=False)
    assert r.status_code == 403 and COOKIE not in r.cookies


def test_session_cookie_is_signed_httponly_strict_and_expires(portal):
    p = portal
    c = p.client()
    r = login(c, "wangfang")
    cookie = r.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Max-Age=28800" in cookie and "Secure" not in cookie
    assert c.get("/h/findings", follow_redirects=False).status_code == 200
    # a tampered cookie is no session
    value = c.cookies.get(COOKIE)
    t = p.client()
    t.cookies.set(COOKIE, value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert t.get("/h/findings", follow_redirects=False).status_code == 303
    # 8 hours later the session is over
    set_wall_clock(p.monkeypatch, "2026-04-01 16:59:59")
    assert c.get("/h/findings", follow_redirects=False).status_code == 200
    set_wall_clock(p.monkeypatch, "2026-04-01 17:00:00")
    r = c.get("/h/findings", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    # logout ends the session at once; disabling a user ends all of theirs
    c2 = p.client()
    login(c2, "wangfang")
    page = c2.get("/h/findings")
    assert c2.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False).status_code == 303
    c2.cookies.set(COOKIE, c2.cookies.get(COOKIE) or "")
    assert c2.get("/h/findings", follow_redirects=False).status_code == 303
    c3 = p.client()
    login(c3, "wangfang")
    auth.set_active(p.con, "wangfang", False)
    assert c3.get("/h/findings", follow_redirects=False).status_code == 303
    login(p.client(), "wangfang", expect=401)


def test_secure_cookie_when_configured(portal):
    app = create_app(portal.con, portal.tmp / "files", secure_cookie=True)
    c = TestClient(app, base_url="https://testserver")
    r = login(c, "wangfang")
    assert "Secure" in r.headers["set-cookie"]


def test_login_rate_limit(portal):
    p = portal
    c = p.client()
    for _ in range(5):
        r = login(c, "wangfang", "wrong password", expect=401)
        assert "用户名或密码错误" in r.text
    # the right password is refused too while the limit holds
    r = login(c, "wangfang", PW, expect=429)
    assert "登录失败次数过多" in r.text
    assert p.con.execute("SELECT count(*) FROM web_logins WHERE outcome = 'failed'").fetchall() == [(5,)]
    set_wall_clock(p.monkeypatch, "2026-04-01 09:15:01")
    login(c, "wangfang", PW)


# ---------------------------------------------------------------------------- the library's rules and refusals


def test_the_portal_refuses_what_the_command_line_refuses(portal):
    p = portal
    rev = p.client()
    login(rev, "li")
    # uphold a finding nobody appealed: the transition table says no, nothing moves
    before = n_events(p.con)
    decide(rev, p.sex, "uphold", "x")
    page = rev.get(f"/findings/{p.sex}").text
    assert "未执行" in page and "cannot uphold" in page and status_of(p.con, p.sex) == "pending_appeal"
    # overturn without a reason is refused
    clerk = p.client()
    login(clerk, "wangfang")
    assert appeal(clerk, [p.sex], "申诉").status_code == 303
    decide(rev, p.sex, "overturn", "")
    assert "a reason is required" in rev.get(f"/findings/{p.sex}").text and status_of(p.con, p.sex) == "appealed"
    # confirm a suspect for part of its amount; more than at risk is refused
    decide(rev, p.age, "confirm", "", amount="99")
    assert "at most the amount at risk" in rev.get(f"/findings/{p.age}").text
    decide(rev, p.age, "confirm", "部分确认", amount="10")
    assert status_of(p.con, p.age) == "pending_appeal"
    assert p.con.execute("SELECT deduction_amt FROM findings WHERE finding_id = ?", [p.age]).fetchall()[0][0] == 10
    # an appeal after the window closed
    set_wall_clock(p.monkeypatch, "2026-04-16")
    login(clerk, "wangfang")
    r = appeal(clerk, [p.bed], "晚了")
    assert "申诉未提交" in clerk.get(r.headers["location"]).text
    assert status_of(p.con, p.bed) == "expired" and n_events(p.con) > before


def test_uploads_are_checked_for_type_content_size_and_count(portal):
    p = portal
    c = p.client()
    login(c, "wangfang")
    before = n_events(p.con)
    cases = [
        ([("run.exe", b"MZ\x90\x00", "application/octet-stream")], "不支持的文件类型"),
        ([("伪装.pdf", b"<html>not a pdf</html>", "application/pdf")], "文件内容与扩展名 .pdf 不符"),
        ([("big.pdf", b"%PDF-" + b"x" * (64 * 1024), "application/pdf")], "超过"),
        ([("empty.pdf", b"", "application/pdf")], "文件为空"),
        ([(f"{i}.pdf", PDF, "application/pdf") for i in range(6)], "附件最多 5 个"),
    ]
    for files, message in cases:
        r = appeal(c, [p.sex], "理由", files)
        assert r.status_code == 303
        assert message in c.get(r.headers["location"]).text, message
    assert n_events(p.con) == before and status_of(p.con, p.sex) == "pending_appeal"
    # nothing was stored for refused uploads of the wrong type
    assert [x for x in (p.tmp / "files").rglob("*") if x.is_file()] == []


# ---------------------------------------------------------------------------- the command


@pytest.mark.slow  # over 3 s: a screened database and Argon2id hashing for each user command
def test_web_user_add_disable_from_the_command_line(tmp_path, monkeypatch):
    b, _ = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    con.close()
    dbf = str(tmp_path / "loop.duckdb")
    run = lambda args, input=None: CliRunner().invoke(cli_app, args, input=input)  # noqa: E731
    r = run(
        [
            "web",
            "user",
            "add",
            "wangfang",
            "--role",
            "clerk",
            "--institution",
            "H001",
            "--name",
            "王芳",
            "--password-stdin",
            "--db",
            dbf,
        ],
        input="short\n",
    )
    assert r.exit_code == 2 and "at least 10 characters" in r.output
    r = run(["web", "user", "add", "wangfang", "--role", "clerk", "--password-stdin", "--db", dbf], input=PW + "\n")
    assert r.exit_code == 2 and "bound to one institution" in " ".join(r.output.split())
    r = run(
        [
            "web",
            "user",
            "add",
            "wangfang",
            "--role",
            "clerk",
            "--institution",
            "H001",
            "--name",
            "王芳",
            "--password-stdin",
            "--db",
            dbf,
        ],
        input=PW + "\n",
    )
    assert r.exit_code == 0, r.output
    r = run(["web", "user", "add", "li", "--role", "reviewer", "--db", dbf], input=PW + "\n" + PW + "\n")
    assert r.exit_code == 0, r.output
    r = run(["web", "user", "list", "--db", dbf])
    assert "wangfang" in r.output and "H001" in r.output and "reviewer" in r.output
    con = db.connect(dbf)
    stored = con.execute("SELECT password_hash FROM web_users WHERE username = 'wangfang'").fetchall()[0][0]
    assert stored.startswith("$argon2id$") and PW not in stored
    assert auth.authenticate(con, "wangfang", PW).institution == "H001"
    con.close()
    r = run(["web", "user", "disable", "wangfang", "--db", dbf])
    assert r.exit_code == 0 and "disabled" in r.output
    con = db.connect(dbf)
    assert auth.authenticate(con, "wangfang", PW) is None
    con.close()
    r = run(["web", "user", "disable", "nobody", "--db", dbf])
    assert r.exit_code == 2 and "no such user" in r.output


def test_an_administrator_adds_and_disables_users_in_the_portal(portal):
    p = portal
    for user in ("wangfang", "li"):
        c = p.client()
        login(c, user)
        assert c.get("/admin/users").status_code == 403
    admin = p.client()
    login(admin, "boss")
    page = admin.get("/admin/users")
    assert page.status_code == 200 and "wangfang" in page.text
    # a clerk without an institution, and a short password, are refused with the field named
    r = admin.post(
        "/admin/users",
        data={
            "csrf": csrf_of(page.text),
            "username": "zhou",
            "role": "clerk",
            "display_name": "周",
            "institution": "",
            "password": PW,
        },
        follow_redirects=True,
    )
    assert "未添加：institution" in r.text
    r = admin.post(
        "/admin/users",
        data={
            "csrf": csrf_of(page.text),
            "username": "zhou",
            "role": "clerk",
            "display_name": "周",
            "institution": "H002",
            "password": "short",
        },
        follow_redirects=True,
    )
    assert "未添加：password" in r.text and auth.get_user(p.con, "zhou") is None
    r = admin.post(
        "/admin/users",
        data={
            "csrf": csrf_of(page.text),
            "username": "zhou",
            "role": "clerk",
            "display_name": "周",
            "institution": "H002",
            "password": PW,
        },
        follow_redirects=True,
    )
    assert "已添加用户 zhou" in r.text
    assert p.con.execute("SELECT created_by FROM web_users WHERE username = 'zhou'").fetchall() == [("赵科长 (boss)",)]
    zhou = p.client()
    login(zhou, "zhou")
    assert p.other in zhou.get("/h/findings").text
    # disabling signs the user out at once
    r = admin.post("/admin/users/zhou/disable", data={"csrf": csrf_of(page.text)}, follow_redirects=True)
    assert "用户 zhou 已停用" in r.text
    assert zhou.get("/h/findings", follow_redirects=False).status_code == 303
    login(p.client(), "zhou", expect=401)
    # without the token nothing changes
    assert admin.post("/admin/users/wangfang/disable", data={}).status_code == 403
    assert auth.get_user(p.con, "wangfang").active


def test_after_an_appeal_the_clerk_returns_only_to_the_portals_own_pages(portal):
    p = portal
    c = p.client()
    login(c, "wangfang")
    page = c.get(f"/findings/{p.sex}")
    r = c.post(
        "/h/appeal",
        data={"csrf": csrf_of(page.text), "finding_id": p.sex, "reason": "理由", "back": f"/findings/{p.sex}"},
        follow_redirects=False,
    )
    assert r.headers["location"] == f"/findings/{p.sex}"
    for back in ("https://evil.example/", "//evil.example/h/findings", "/h/findings\\@evil"):
        r = c.post(
            "/h/appeal",
            data={"csrf": csrf_of(page.text), "finding_id": p.bed, "reason": "", "back": back},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/h/findings", back


def test_a_second_appeal_when_the_settings_allow_it(portal):
    p = portal
    lifecycle.set_setting(p.con, "second_appeal", "true")
    clerk, rev = p.client(), p.client()
    login(clerk, "wangfang")
    login(rev, "li")
    assert appeal(clerk, [p.bed], "不同床位").status_code == 303
    decide(rev, p.bed, "uphold", "无转床记录")
    # upheld, with a 复议 window of 10 working days from today: the clerk may appeal once more
    page = clerk.get(f"/findings/{p.bed}").text
    assert "申请复议" in page and "剩 10 个工作日" in page
    assert f'name="finding_id" value="{p.bed}" class="pick"' in clerk.get("/h/findings?period=2026-03").text
    assert appeal(clerk, [p.bed], "补充护理记录").status_code == 303
    decide(rev, p.bed, "uphold", "复议维持")
    assert status_of(p.con, p.bed) == "upheld"
    # after the second appeal there is no third
    assert "申请复议" not in clerk.get(f"/findings/{p.bed}").text
    r = appeal(clerk, [p.bed], "第三次")
    assert "after its second appeal" in clerk.get(r.headers["location"]).text


def test_queue_filters_and_sorting_and_bad_filters_are_named(portal):
    p = portal
    clerk = p.client()
    login(clerk, "wangfang")
    # the screening's events were written at 2026-04-01 09:00 (the fixture's clock): the
    # appeals come later the same morning, whatever the machine's load
    set_wall_clock(p.monkeypatch, "2026-04-01 09:30:00")
    assert appeal(clerk, [p.sex], "一").status_code == 303
    set_wall_clock(p.monkeypatch, "2026-04-01 10:00:00")
    assert appeal(clerk, [p.bed], "二").status_code == 303
    rev = p.client()
    login(rev, "li")
    ids = lambda url: re.findall(r'data-finding="([0-9a-f]+)"', rev.get(url).text)  # noqa: E731
    # oldest waiting first by default: the suspect (since screening), then the appeals in order
    assert ids("/r/queue") == [p.age, p.sex, p.bed]
    assert ids("/r/queue?sort=amount") == [p.sex, p.bed, p.age]
    assert ids("/r/queue?status=appealed") == [p.sex, p.bed]
    assert ids("/r/queue?status=pending_appeal&status=appealed&institution=H002") == [p.other]
    assert ids("/r/queue?rule=R-FRQ-001") == [p.bed]
    assert ids("/r/queue?dept=D03") == [p.bed] and ids("/r/queue?doctor=DR01") == [p.age, p.sex]
    assert ids("/r/queue?min=25&max=100") == [p.bed]
    for url, message in (
        ("/r/queue?min=abc", "金额下限"),
        ("/r/queue?period=2026-13", "结算月份"),
        ("/r/queue?sort=random", "sort must be one of"),
        ("/r/queue?status=open", "unknown state"),
        ("/r/queue?rule=x'%20OR%201=1", "规则编号"),
        ("/h/findings?period=march", "结算月份"),
    ):
        r = (clerk if url.startswith("/h/") else rev).get(url)
        assert r.status_code == 200 and message in r.text and 'data-finding="' not in r.text, url
    r = rev.get("/statements/abc.xlsx")
    assert r.status_code == 400 and "请求参数有误" in r.text
    assert rev.get("/report?period=2026-03&institution=H001&format=pdf").status_code == 400
