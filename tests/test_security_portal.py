"""Attacks on the web portal (``medaudit web``): hostile values in every page (stored XSS), SQL
in the queue's query parameters, hostile upload names and sizes, another institution's finding
ids in form posts (IDOR), CSRF tokens of another session, open redirects, session fixation and
login limits dodged with a spoofed X-Forwarded-For. Reuses the portal fixture of test_web."""

from __future__ import annotations

import hashlib
import io
import re

import openpyxl

from medaudit.hospital_loop import lifecycle
from medaudit.web import auth
import test_web
from test_web import PDF, PW, appeal, csrf_of, decide, login, n_events, status_of

portal_db, portal = test_web.portal_db, test_web.portal  # the fixtures of test_web

XSS = (
    "</title><script>alert(1)</script>",
    '"><svg onload=alert(2)>',
    "'><img src=x onerror=alert(3)>",
    '=HYPERLINK("http://evil.example","x")',
    "\u202egnp.exe",
)
RAW = ("<script>alert(1)", "<svg onload", "<img src=x")


def assert_inert(text: str, where: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{where}: raw {raw!r} in the page"


def poison(p) -> None:
    """Hostile values wherever the portal shows data: institution, department and doctor names,
    rule name, evidence, a user's display name, the pre-alert answer."""
    c = p.con
    c.execute("UPDATE mdtrt_d SET fixmedins_name = ? WHERE fixmedins_code = 'H001'", [XSS[0] + " 医院"])
    f = c.execute("SELECT dept_code, dr_code FROM findings WHERE finding_id = ?", [p.sex]).fetchall()[0]
    if f[0]:
        c.execute("DELETE FROM code_names WHERE kind = 'dept' AND code = ?", [f[0]])
        c.execute(
            "INSERT INTO code_names (kind, code, code_name, fixmedins_code) VALUES ('dept', ?, ?, 'H001')",
            [f[0], XSS[1]],
        )
    c.execute(
        "UPDATE findings SET rule_name = ?, evidence = ? WHERE fixmedins_code = 'H001'",
        [XSS[2], XSS[0] + XSS[1] + XSS[3]],
    )
    auth.add_user(c, "evil", "reviewer", PW, XSS[1] + "审核员")


def test_hostile_values_are_escaped_on_every_page(portal):
    p = portal
    poison(p)
    clerk = p.client()
    login(clerk, "wangfang")
    # a clerk types a script as the appeal reason and names the attachment like markup
    r = appeal(clerk, [p.sex], XSS[0] + XSS[1] + XSS[4], [(XSS[2] + ".pdf", PDF, "application/pdf")])
    assert r.status_code == 303 and status_of(p.con, p.sex) == "appealed"
    rev = p.client()
    login(rev, "evil")
    assert decide(rev, p.sex, "uphold", "驳回：" + XSS[0] + XSS[2]).status_code == 303
    assert status_of(p.con, p.sex) == "upheld"
    sha = hashlib.sha256(PDF).hexdigest()
    pages = {
        "clerk list": clerk.get("/h/findings?period=2026-03"),
        "clerk finding": clerk.get(f"/findings/{p.sex}"),
        "clerk report": clerk.get("/report?period=2026-03"),
        "reviewer queue": rev.get("/r/queue"),
        "reviewer queue (filters echoed)": rev.get(
            "/r/queue", params={"institution": XSS[1], "sort": XSS[0], "rule": XSS[2]}
        ),
        "reviewer finding": rev.get(f"/findings/{p.sex}"),
        "reviewer finalize": rev.get("/r/finalize"),
        "reviewer report": rev.get("/report?period=2026-03&institution=H001"),
        "error page": rev.get("/report", params={"period": XSS[0], "institution": "H001"}),
        "clerk bad filter": clerk.get("/h/findings", params={"status": XSS[1], "dept": XSS[0]}),
    }
    for where, r in pages.items():
        assert r.status_code in (200, 400), (where, r.status_code)
        assert_inert(r.text, where)
    # the values were shown (escaped), so the checks above looked at them
    shown = pages["reviewer finding"].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "&#34;&gt;&lt;svg onload=alert(2)&gt;" in shown
    assert "&lt;img src=x onerror=alert(3)&gt;.pdf" in shown  # the attachment's name
    assert "&lt;script&gt;" in pages["reviewer queue"].text and "&lt;script&gt;" in pages["clerk report"].text
    # pages forbid inline script anyway; the report allows none at all
    assert "script-src" not in pages["reviewer report"].headers["content-security-policy"]
    assert "default-src 'self'" in pages["reviewer queue"].headers["content-security-policy"]
    # the attachment downloads as an attachment with a harmless ASCII name (no header injection)
    d = rev.get(f"/files/{p.sex}/{sha}")
    cd = d.headers["content-disposition"]
    assert d.status_code == 200 and cd.startswith("attachment;") and "<" not in cd and '"' not in cd.split('"')[1]
    # the workbook the clerk downloads keeps the formula-looking evidence as text
    wb = openpyxl.load_workbook(io.BytesIO(clerk.get("/h/workbook?period=2026-03").content))
    cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None]
    assert any(XSS[3] in str(c.value) for c in cells)
    assert not any(c.data_type == "f" for c in cells)


def test_sql_in_queue_filters_and_sorting_changes_nothing(portal):
    p = portal
    rev = p.client()
    login(rev, "li")
    base = re.findall(r'data-finding="([0-9a-f]+)"', rev.get("/r/queue").text)
    assert base  # the suspect at least
    findings_before = p.con.execute("SELECT count(*) FROM findings").fetchall()
    for params in (
        {"sort": "amount; DROP TABLE findings"},
        {"sort": "1 DESC"},
        {"status": "appealed' OR '1'='1"},
        {"institution": "H001' OR '1'='1"},
        {"period": "2026-03' --"},
        {"rule": "x' UNION SELECT * FROM web_users --"},
        {"min": "0 OR 1=1"},
        {"max": "1e309"},
        {"doctor": "DR01'--"},
        {"dept": "%"},
    ):
        r = rev.get("/r/queue", params=params)
        assert r.status_code == 200, params
        assert re.findall(r'data-finding="([0-9a-f]+)"', r.text) == [], params  # refused, named, no rows
        assert 'id="error"' in r.text, params
        assert "argon2" not in r.text and "$argon2id$" not in r.text
    clerk = p.client()
    login(clerk, "wangfang")
    for params in (
        {"sort": "amount); DROP TABLE findings; --"},
        {"status": "x') OR TRUE --"},
        {"rule": "R' OR fixmedins_code <> 'H001"},
    ):
        r = clerk.get("/h/findings", params=params)
        assert r.status_code == 200 and re.findall(r'data-finding="', r.text) == [] and 'id="error"' in r.text, params
    assert p.con.execute("SELECT count(*) FROM findings").fetchall() == findings_before


def test_hostile_upload_names_stay_names_and_oversize_is_refused(portal):
    p = portal
    clerk = p.client()
    login(clerk, "wangfang")
    outside = p.tmp / "x.pdf"
    names = [
        "../../x.pdf",
        "..\\..\\x.pdf",
        "/etc/x.pdf",
        "a\x00b.pdf",
        "CON.pdf",
        "aux.pdf",
        "a" * 1000 + ".pdf",
        "evil\r\nX-Injected: 1.pdf",
    ]
    bodies = [PDF + f" {i}".encode() for i in range(len(names))]
    for fid, part in ((p.sex, range(0, 4)), (p.bed, range(4, 8))):
        r = appeal(clerk, [fid], "理由", [(names[i], bodies[i], "application/pdf") for i in part])
        assert r.status_code == 303
        page = clerk.get(r.headers["location"]).text
        assert "已提交 1 条申诉（附件 4 个）" in page, page[:300]
    # a name too long for the form parser: refused whole (400), nothing filed or stored
    before = n_events(p.con)
    r = appeal(clerk, [p.age], "理由", [("a" * 20000 + ".pdf", PDF + b" long", "application/pdf")])
    assert r.status_code in (303, 400) and n_events(p.con) == before
    assert not outside.exists() and not (p.tmp.parent / "x.pdf").exists()
    # every upload is a file named by its content hash inside the files folder, nothing else
    stored = sorted(x.relative_to(p.tmp / "files").as_posix() for x in (p.tmp / "files").rglob("*") if x.is_file())
    want = sorted(f"{h[:2]}/{h}" for h in (hashlib.sha256(b).hexdigest() for b in bodies))
    assert stored == want
    recorded = [a["name"] for fid in (p.sex, p.bed) for e in lifecycle.history(p.con, fid) for a in e["attachments"]]
    assert len(recorded) == len(names)
    for n in recorded:
        assert "/" not in n and "\\" not in n and "\x00" not in n and "\r" not in n and "\n" not in n
        assert len(n) <= 120
    # downloading each keeps the header one line with an ASCII fallback name
    for fid in (p.sex, p.bed):
        for e in lifecycle.history(p.con, fid):
            for a in e["attachments"]:
                d = clerk.get(f"/files/{fid}/{a['sha256']}")
                assert d.status_code == 200 and "\n" not in d.headers["content-disposition"]
                assert "x-injected" not in {k.lower() for k in d.headers}
    # oversize: one file past the limit, and a body past the whole form's bound (413, nothing read)
    before = n_events(p.con)
    big = b"%PDF-1.4" + b"0" * (64 * 1024)
    r = appeal(clerk, [p.age], "太大", [("big.pdf", big, "application/pdf")])
    assert r.status_code == 303 and "超过" in clerk.get(r.headers["location"]).text
    page = clerk.get("/h/findings?period=2026-03")
    huge = clerk.post(
        "/h/appeal",
        data={"csrf": csrf_of(page.text), "finding_id": p.age, "reason": "x"},
        files=[("files", ("h.pdf", b"%PDF-" + b"0" * (7 * 1024 * 1024), "application/pdf"))],
        follow_redirects=False,
    )
    assert huge.status_code == 413
    assert n_events(p.con) == before
    assert not (p.tmp / "files" / hashlib.sha256(big).hexdigest()[:2] / hashlib.sha256(big).hexdigest()).exists()


def test_another_institutions_finding_in_every_form_and_link(portal):
    p = portal
    # H002 appeals its own finding with an attachment
    other = p.client()
    login(other, "qian")
    png = b"\x89PNG\r\n\x1a\n" + b"y" * 40
    assert appeal(other, [p.other], "H002 的病历", [("h2.png", png, "image/png")]).status_code == 303
    sha2 = hashlib.sha256(png).hexdigest()
    clerk = p.client()
    login(clerk, "wangfang")
    # H001 attaches the same bytes to its own finding: it may read its own event's file ...
    assert appeal(clerk, [p.sex], "同样的文件", [("mine.png", png, "image/png")]).status_code == 303
    assert clerk.get(f"/files/{p.sex}/{sha2}").status_code == 200
    # ... but never through H002's finding id, and nothing of H002 is shown
    r = clerk.get(f"/files/{p.other}/{sha2}")
    assert r.status_code == 404 and "H002 的病历" not in r.text
    before = n_events(p.con)
    page = clerk.get("/h/findings?period=2026-03")
    token = csrf_of(page.text)
    # a clerk's decision form on another's finding (role first: 403), repeated ids, ids by prefix or case
    assert clerk.post(f"/r/findings/{p.other}/decide", data={"csrf": token, "decision": "overturn"}).status_code == 403
    for ids in ([p.other.upper()], [p.other[:8]], [p.other + "00"], [p.bed, p.bed, p.other], ["' OR 1=1 --"]):
        r = clerk.post("/h/appeal", data={"csrf": token, "finding_id": ids, "reason": "x"}, follow_redirects=False)
        assert r.status_code in (303, 404), ids
        assert n_events(p.con) == before, ids
    assert status_of(p.con, p.other) == "appealed" and status_of(p.con, p.bed) == "pending_appeal"
    # statements and reports of H002 by id or code: not found
    assert clerk.get("/report", params={"period": "2026-03", "institution": "h002"}).status_code in (400, 404)
    assert clerk.get("/statements/-1.xlsx").status_code == 404
    assert clerk.get("/statements/1 OR 1=1.xlsx").status_code in (400, 404, 422)


def test_a_csrf_token_belongs_to_one_session(portal):
    p = portal
    a, b = p.client(), p.client()
    login(a, "wangfang")
    login(b, "wangfang")  # the same user, another session
    token_a = csrf_of(a.get("/h/findings?period=2026-03").text)
    token_b = csrf_of(b.get("/h/findings?period=2026-03").text)
    assert token_a != token_b
    before = n_events(p.con)
    r = appeal(b, [p.sex], "用 A 的令牌", csrf=token_a)
    assert r.status_code == 403 and n_events(p.con) == before
    # a token of a session that ended is dead with it
    a.post("/logout", data={"csrf": token_a}, follow_redirects=False)
    assert appeal(a, [p.sex], "退出后", csrf=token_a).status_code in (303, 403)
    assert n_events(p.con) == before
    # the login form's token is bound to its pre-login cookie: another browser's token is refused
    x, y = p.client(), p.client()
    tx = csrf_of(x.get("/login").text)
    y.get("/login")
    r = y.post("/login", data={"csrf": tx, "username": "wangfang", "password": PW}, follow_redirects=False)
    assert r.status_code == 403


def test_no_open_redirect_after_an_appeal(portal):
    p = portal
    clerk = p.client()
    login(clerk, "wangfang")
    token = csrf_of(clerk.get("/h/findings?period=2026-03").text)
    for back in (
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/h/findings/../..//evil.example",
        "/h/findings?x=1\r\nLocation: https://evil.example",
        "/findings/abcdef/../../evil",
        "/h/findings\\@evil.example",
        "javascript:alert(1)",
        "/%2F%2Fevil.example",
    ):
        r = clerk.post(
            "/h/appeal", data={"csrf": token, "finding_id": [], "reason": "", "back": back}, follow_redirects=False
        )
        loc = r.headers["location"]
        assert r.status_code == 303 and loc.startswith("/") and not loc.startswith("//"), (back, loc)
        assert "evil" not in loc and "\n" not in loc, (back, loc)
    # the login page takes no redirect target at all
    anon = p.client()
    r = anon.get("/login?next=https://evil.example")
    r = anon.post(
        "/login?next=https://evil.example",
        data={"csrf": csrf_of(r.text), "username": "wangfang", "password": PW},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_session_fixation_a_planted_cookie_is_never_the_session(portal):
    p = portal
    c = p.client()
    planted = "A" * 43 + ".deadbeef"
    c.cookies.set("medaudit_session", planted)
    assert c.get("/h/findings", follow_redirects=False).headers["location"] == "/login"
    r = login(c, "wangfang")
    new = r.cookies.get("medaudit_session")
    assert new and new != planted and not new.startswith("A" * 43)
    # a pre-login cookie the attacker chose does not carry into the session either
    c2 = p.client()
    c2.cookies.set("medaudit_login", "B" * 43)
    r = login(c2, "wangfang")
    assert "B" * 43 not in r.cookies.get("medaudit_session")
    # the old session cookie is dead after logout
    c3 = p.client()
    r = login(c3, "wangfang")
    cookie = r.cookies.get("medaudit_session")
    c3.post("/logout", data={"csrf": csrf_of(c3.get("/h/findings?period=2026-03").text)})
    c4 = p.client()
    c4.cookies.set("medaudit_session", cookie)
    assert c4.get("/h/findings", follow_redirects=False).status_code == 303


def test_login_limit_is_not_bypassed_by_forwarded_headers_or_name_case(portal):
    p = portal
    c = p.client()
    for i in range(5):
        page = c.get("/login")
        r = c.post(
            "/login",
            data={
                "csrf": csrf_of(page.text),
                "username": ["wangfang", "WangFang", " wangfang "][i % 3],
                "password": "wrong password",
            },
            headers={"X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.0.1.{i}", "Forwarded": f"for=10.0.2.{i}"},
            follow_redirects=False,
        )
        assert r.status_code == 401
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"csrf": csrf_of(page.text), "username": "wangfang", "password": PW},
        headers={"X-Forwarded-For": "192.0.2.77"},
        follow_redirects=False,
    )
    assert r.status_code == 429
    # the client address key holds too: another user from the same address, any header
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"csrf": csrf_of(page.text), "username": "qian", "password": "wrong password"},
        headers={"X-Forwarded-For": "198.51.100.1"},
        follow_redirects=False,
    )
    assert r.status_code == 429
    # the log records the real client, not the header's address
    clients = {x for (x,) in p.con.execute("SELECT DISTINCT client FROM web_logins").fetchall()}
    assert not any(x.startswith(("10.", "192.0.2", "198.51")) for x in clients)


def test_a_refused_appeal_or_decision_leaves_no_uploaded_file(portal):
    """Attachments of a refused form were stored anyway: a clerk could fill the bureau's disk with
    files no event names (a finding already appealed refuses every further appeal)."""
    p = portal
    clerk = p.client()
    login(clerk, "wangfang")
    assert appeal(clerk, [p.sex], "第一次").status_code == 303 and status_of(p.con, p.sex) == "appealed"
    before = n_events(p.con)
    for i in range(3):
        body = PDF + f" refused {i}".encode()
        r = appeal(clerk, [p.sex], "再次申诉", [(f"r{i}.pdf", body, "application/pdf")])
        assert r.status_code == 303 and "申诉未提交" in clerk.get(r.headers["location"]).text
    rev = p.client()
    login(rev, "li")
    page = rev.get(f"/findings/{p.bed}")  # pending appeal: a reviewer cannot decide it yet
    r = rev.post(
        f"/r/findings/{p.bed}/decide",
        data={"csrf": csrf_of(page.text), "decision": "overturn", "reason": "x"},
        files=[("files", ("d.pdf", PDF + b" decision", "application/pdf"))],
        follow_redirects=False,
    )
    assert r.status_code == 303 and "未执行" in rev.get(r.headers["location"]).text
    assert n_events(p.con) == before
    assert [x for x in (p.tmp / "files").rglob("*") if x.is_file()] == []
    # a file an earlier event names stays when a later form with the same file is refused
    r = appeal(clerk, [p.bed], "有附件", [("ok.pdf", PDF, "application/pdf")])
    assert status_of(p.con, p.bed) == "appealed"
    r = appeal(clerk, [p.bed], "同一附件再次", [("ok.pdf", PDF, "application/pdf")])
    sha = hashlib.sha256(PDF).hexdigest()
    assert (p.tmp / "files" / sha[:2] / sha).read_bytes() == PDF


# ---------------------------------------------------------------------------- medaudit web user ...

SECRET = "Tr0ub4dor&3-not-shown"


def _everything_stored(dbf) -> str:
    from medaudit import db as dbm

    con = dbm.connect(dbf)
    try:
        out = []
        for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall():
            out += [str(r) for r in con.execute(f'SELECT * FROM "{t}"').fetchall()]
        return "\n".join(out)
    finally:
        con.close()


def test_web_user_commands_never_echo_store_or_log_a_password(portal_db, tmp_path, caplog):
    import logging
    import shutil

    from typer.testing import CliRunner

    from medaudit.cli import app as cli_app

    caplog.set_level(logging.DEBUG)
    dbf = tmp_path / "u.duckdb"
    shutil.copy(portal_db[0], dbf)
    run = lambda args, input=None: CliRunner().invoke(cli_app, [*args, "--db", str(dbf)], input=input)  # noqa: E731
    outputs = [
        run(["web", "user", "add", "zhang", "--role", "reviewer"], input=f"{SECRET}\n{SECRET}\n"),  # asked twice
        run(["web", "user", "add", "zhou", "--role", "admin", "--password-stdin"], input=SECRET + "\n"),
        run(["web", "user", "password", "zhang"], input=f"{SECRET}-2\n{SECRET}-2\n"),
        run(["web", "user", "password", "zhou", "--password-stdin"], input="short\n"),  # refused: too short
        run(["web", "user", "add", "wu", "--role", "admin"], input=f"{SECRET}\n{SECRET}-typo\n{SECRET}\n{SECRET}\n"),
        run(["web", "user", "list"]),
    ]
    assert [r.exit_code for r in outputs] == [0, 0, 0, 2, 0, 0], [r.output for r in outputs]
    for r in outputs:
        assert SECRET not in r.output and "short" not in r.output.replace("shorter", ""), r.output
    assert SECRET not in caplog.text
    stored = _everything_stored(dbf)
    assert SECRET not in stored and "$argon2id$" in stored
    # the portal: a failed sign-in never shows or records the password typed
    from medaudit import db as dbm
    from medaudit.web.app import create_app
    from fastapi.testclient import TestClient

    con = dbm.connect(dbf)
    c = TestClient(create_app(con, tmp_path / "files"))
    page = c.get("/login")
    r = c.post("/login", data={"csrf": csrf_of(page.text), "username": "zhang", "password": SECRET + "-wrong"})
    assert r.status_code == 401 and SECRET not in r.text
    assert SECRET not in "\n".join(str(x) for x in con.execute("SELECT * FROM web_logins").fetchall())
    con.close()


def test_web_user_messages_show_markup_as_typed(portal_db, tmp_path):
    """A user name of rich markup (``[/x]``) made ``web user`` crash with a MarkupError traceback
    instead of naming the refused value."""
    import shutil

    from typer.testing import CliRunner

    from medaudit.cli import app as cli_app

    dbf = tmp_path / "u.duckdb"
    shutil.copy(portal_db[0], dbf)
    r = CliRunner().invoke(
        cli_app,
        ["web", "user", "add", "[/x]", "--role", "admin", "--password-stdin", "--db", str(dbf)],
        input=PW + "\n",
    )
    assert r.exit_code == 2 and "username '[/x]'" in r.output, (r.exit_code, r.output, r.exception)
    r = CliRunner().invoke(cli_app, ["web", "user", "disable", "[bold]nobody[/]", "--db", str(dbf)])
    assert r.exit_code == 2 and "username '[bold]nobody[/]': no such user" in r.output, (r.output, r.exception)
    # a display name and an institution code of markup are printed as typed once the user is added
    r = CliRunner().invoke(
        cli_app,
        [
            "web",
            "user",
            "add",
            "ma",
            "--role",
            "clerk",
            "--institution",
            "[red]H9[/]",
            "--name",
            "[/]马[link=http://evil.example]x",
            "--password-stdin",
            "--db",
            str(dbf),
        ],
        input=PW + "\n",
    )
    out = " ".join(r.output.split())
    assert r.exit_code == 0 and "user ma ([/]马[link=http://evil.example]x) added" in out, (r.output, r.exception)
    assert "no findings of institution [red]H9[/]" in out
