"""The operator's dashboard in a real browser, against ``shaken serve`` fed by real SIP calls.

A lab's ``shaken serve`` (SIP signing and verification over UDP, the REST listener with an
admin key) receives real INVITEs: calls signed by its STI-AS then verified by its STI-VS, calls
with no Identity, a spoofed caller (rejected), a PASSporT naming an unusable x5u, and calls
whose display name, Call-ID and x5u are shaped like script; where sipp is installed, sipp
sends a few more verified calls, their display name shaped like script too. Headless Chromium
(Debian ``chromium`` and ``chromium-driver``, driven by selenium) then loads ``/dashboard``:
every panel must show the numbers the call log holds, the time range and profile filters
must change them, the search must find a call by Call-ID and show a rejected one as
NOT ALLOWED with its code, nothing injected may execute, and without the admin key the page
is a 401. Each panel's screenshot is written to the test's temporary directory; with
``SHAKEN_DASHBOARD_SCREENSHOTS=DIR`` the whole page is also written there (the README's
``docs/dashboard.png`` comes from that).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shaken.adapters.sip.client import SipResponse, build_invite, send_invite
from shaken.adapters.store.calllog import read_calls
from shaken.core.jws import b64url_encode, load_private_key, sign_es256
from shaken.core.reasons import REASONS, Reason
from shaken.toolkit.lab import Lab

from .sip_peers import DEST, ORIG, SIPP, ShakenServer, free_port, make_lab, sipp, start_shaken

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("Debian chromium and chromium-driver are not installed", allow_module_level=True)

ADMIN = "dashboard-admin-" + uuid.uuid4().hex
#: What an injected script would do if it ran: set this global (checked after every page).
XSS_NAME = '"<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"'
#: SIP allows no "=" in a Call-ID (RFC 3261 word): markup that would show if it were parsed.
XSS_CALL_ID = "<script>alert(3)</script><b>bold</b>@x"
#: An x5u as SIP lets it through (no "<", ">" or spaces in an info URI): attribute- and
#: link-shaped instead.
XSS_X5U = "https://evil.example/'onerror='window.__xss=4'/javascript:alert(4).pem"
SPOOFED = "12025550124"
#: The calls sipp sends (when it is installed), and the display name they carry.
SIPP_CALLS = 3 if SIPP is not None else 0
SIPP_NAME = '"<svg onload=window.__xss=5>"'
SIPP_SCENARIO = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- An INVITE with a PASSporT the lab signed (fields: orig;dest;token;x5u), then the ACK. -->
<scenario name="dashboard sipp calls">
  <send retrans="500"><![CDATA[
      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {SIPP_NAME} <sip:[field0]@[local_ip]>;tag=[call_number]
      To: <sip:[field1]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Identity: [field2];info=<[field3]>;alg=ES256;ppt=shaken
      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="302"/>
  <send><![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {SIPP_NAME} <sip:[field0]@[local_ip]>;tag=[call_number]
      To: <sip:[field1]@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
</scenario>
"""


@dataclass
class Site:
    server: ShakenServer
    rest: int
    lab: Lab
    calls: Path
    spoofed_call_id: str
    first_call_id: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest}/dashboard/"

    def records(self) -> list[dict[str, Any]]:
        return read_calls(self.calls)


def invite(port: int, *, from_value: str, call_id: str, identity: str | None = None) -> SipResponse:
    headers = [] if identity is None else [("Identity", identity)]

    def build(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{DEST}@127.0.0.1",
            from_value=from_value,
            to_value=f"<sip:{DEST}@127.0.0.1>",
            local=local,
            headers=headers,
            call_id=call_id,
        )

    return asyncio.run(send_invite(("127.0.0.1", port), build, timeout=20.0))


def forged_identity(lab: Lab, x5u: str) -> str:
    """A PASSporT signed with the lab's key that names ``x5u`` (no certificate is there)."""
    head = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u}
    body = {
        "attest": "A",
        "dest": {"tn": [DEST]},
        "iat": int(time.time()),
        "orig": {"tn": ORIG},
        "origid": str(uuid.uuid4()),
    }
    signing_input = (
        b64url_encode(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(body, separators=(",", ":")).encode())
    )
    key = load_private_key(lab.sp_key.read_bytes())
    signature = b64url_encode(sign_es256(key, signing_input.encode()))
    return f"{signing_input}.{signature};info=<{x5u}>;alg=ES256;ppt=shaken"


def send_calls(server: ShakenServer, lab: Lab, work: Path) -> tuple[str, str]:
    """The site's traffic, over real SIP; returns the Call-IDs of the first signed call and
    of the spoofed one."""
    caller = f"<sip:{ORIG}@127.0.0.1>;tag=t1"
    first = ""
    for i, display in enumerate(["Alice", XSS_NAME, "Bob"]):
        call_id = XSS_CALL_ID if i == 1 else f"signed-{i}-{uuid.uuid4().hex[:8]}"
        from_value = f"{display} {caller}"
        signed = invite(server.sign, from_value=from_value, call_id=call_id)
        assert signed.code == 302, signed.raw
        identity = signed.first("identity")
        assert identity
        verified = invite(server.verify, from_value=from_value, call_id=call_id, identity=identity)
        assert verified.code == 302, verified.raw
        first = first or call_id
    for i in range(2):
        missing = invite(server.verify, from_value=caller, call_id=f"unsigned-{i}")
        assert missing.code == 302  # the lab lets an unsigned call through, marked
    signed = invite(server.sign, from_value=caller, call_id="spoofed")
    identity = signed.first("identity")
    assert identity
    spoofed = invite(
        server.verify,
        from_value=f"<sip:{SPOOFED}@127.0.0.1>;tag=t2",
        call_id="spoofed",
        identity=identity,
    )
    assert spoofed.code >= 400  # the lab rejects a failed verification
    forged = forged_identity(lab, XSS_X5U)
    invite(server.verify, from_value=caller, call_id="forged-x5u", identity=forged)
    if SIPP_CALLS:
        send_sipp_calls(server, work)
    return first, "spoofed"


def send_sipp_calls(server: ShakenServer, work: Path) -> None:
    """SIPP_CALLS verified calls sent by sipp, each with a PASSporT our STI-AS signed."""
    lines = ["SEQUENTIAL"]
    for i in range(SIPP_CALLS):
        signed = invite(server.sign, from_value=f"<sip:{ORIG}@127.0.0.1>;tag=s{i}", call_id=f"s{i}")
        identity = signed.first("identity")
        assert signed.code == 302 and identity, signed.raw
        token, _, params = identity.partition(";")
        x5u = params.split("info=<", 1)[1].split(">", 1)[0]
        lines.append(f"{ORIG};{DEST};{token};{x5u}")
    inf = work / "sipp-calls.csv"
    inf.write_text("\n".join(lines) + "\n")
    scenario = work / "sipp-calls.xml"
    scenario.write_text(SIPP_SCENARIO)
    run = sipp(scenario, f"127.0.0.1:{server.verify}", work, calls=SIPP_CALLS, inf=inf)
    assert run.returncode == 0, run.errors + run.screen
    assert len(run.logged("received", "SIP/2.0 302")) == SIPP_CALLS


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("dashboard")
    lab = make_lab(work / "lab")
    rest = free_port(__import__("socket").SOCK_STREAM)
    digest = __import__("hashlib").sha256(ADMIN.encode()).hexdigest()
    extra = f'[api_key.ops]\nsha256 = "{digest}"\nadmin = true\nmay_verify = false\n'
    server = start_shaken(
        lab,
        work,
        extra=extra,
        server_lines=(
            f'rest = ["http:127.0.0.1:{rest}"]\n'
            f'call_log = "{work / "calls.sqlite"}"\ncall_log_flush_ms = 20'
        ),
    )
    try:
        first, spoofed = send_calls(server, lab, work)
        calls = work / "calls.sqlite"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # 13 records of our own client's calls, and two (signed, verified) per sipp call.
            if calls.exists() and len(read_calls(calls)) >= 13 + 2 * SIPP_CALLS:
                break
            time.sleep(0.1)
        yield Site(server, rest, lab, calls, spoofed, first)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,2400")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def authorize(driver: Any, password: str | None) -> None:
    """Every request of the browser carries HTTP Basic with ``password`` (None: nothing)."""
    driver.execute_cdp_cmd("Network.enable", {})
    headers = {}
    if password is not None:
        token = base64.b64encode(f"ops:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


def loaded(driver: Any, count: int = 1) -> None:
    """Until the page has drawn its panels ``count`` times."""
    WebDriverWait(driver, 30).until(
        lambda d: (
            int(d.execute_script("return Number(document.body.dataset.loaded || 0)")) >= count
            and d.execute_script("return document.body.dataset.loading") == "false"
        )
    )


def open_page(driver: Any, site: Site) -> None:
    authorize(driver, ADMIN)
    driver.get(site.url)
    loaded(driver)


def text(driver: Any, selector: str) -> str:
    value: str = driver.find_element(By.CSS_SELECTOR, selector).text
    return value


def table(driver: Any, selector: str) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"{selector} tbody tr")
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def nothing_ran(driver: Any) -> None:
    assert driver.execute_script("return window.__xss") is None
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        alert = None
    assert alert is None
    assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
    assert driver.find_elements(By.CSS_SELECTOR, "main script") == []
    assert driver.find_elements(By.CSS_SELECTOR, "main b") == []


def shoot(driver: Any, directory: Path) -> None:
    for panel in driver.find_elements(By.CSS_SELECTOR, "section.panel"):
        panel.screenshot(str(directory / f"{panel.get_attribute('id')}.png"))
    wanted = os.environ.get("SHAKEN_DASHBOARD_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(wanted) / "dashboard.png"))


def inbound(site: Site) -> list[dict[str, Any]]:
    return [
        r for r in site.records() if r["direction"] == "verify" and r["outcome"] != "not_processed"
    ]


def test_the_panels_show_what_the_call_log_holds(site: Site, browser: Any, tmp_path: Path) -> None:
    open_page(browser, site)
    calls = inbound(site)
    outcomes = Counter(r["outcome"] for r in calls)
    assert outcomes["verified"] == 3 + SIPP_CALLS
    assert outcomes["missing"] == 2 and outcomes["failed"] == 2
    assert text(browser, "#inbound-calls") == str(len(calls))
    signed = len(calls) - outcomes["missing"]
    assert text(browser, "#inbound-signed") == str(signed)
    assert text(browser, "#signed-share") == f"{100 * signed / len(calls):.1f}%"
    assert text(browser, "#inbound-rejected") == str(sum(not r["allowed"] for r in calls))
    # The series totals are the call log's counts by outcome (verified by attestation).
    series = Counter(
        f"verified_{r['attest']}" if r["outcome"] == "verified" else r["outcome"] for r in calls
    )
    assert dict((name, int(n)) for name, n in table(browser, "#traffic-totals")) == dict(series)
    assert browser.find_elements(By.CSS_SELECTOR, "#traffic-chart canvas")  # uPlot drew
    # Failure reasons: counted, with the Reason table's code and explanation.
    reasons = Counter(r["reason"] for r in calls if r["reason"])
    shown = {row[0]: row for row in table(browser, "#failures-table")}
    assert {k: int(v[1]) for k, v in shown.items()} == dict(reasons)
    for name, row in shown.items():
        info = REASONS[Reason(name)]
        assert (row[3], row[4]) == (str(info.sip_code), info.description)
    # Upstreams: everything came from loopback.
    assert table(browser, "#upstreams-source")[0][:2] == ["127.0.0.1", str(len(calls))]
    signers = {row[0]: row for row in table(browser, "#upstreams-signer")}
    unsigned = [r for r in calls if r["spc"] is None and r["x5u"] is None]
    assert signers["(unsigned)"][1] == str(len(unsigned))
    assert signers[f"{site.lab.settings.spc} @ {site.lab.x5u.split('/')[2]}"][1] == str(
        sum(r["spc"] == site.lab.settings.spc for r in calls)
    )
    # Our signing: every call sent to the STI-AS was signed.
    signed_out = [r for r in site.records() if r["outcome"] == "signed"]
    assert text(browser, "#signed-total") == str(len(signed_out))
    (ours,) = table(browser, "#signing-certificates")
    assert ours[0] == site.lab.x5u
    assert float(ours[2]) > 0
    assert ours[3] == "valid"
    shoot(browser, tmp_path)
    assert (tmp_path / "panel-traffic.png").stat().st_size > 1000
    nothing_ran(browser)


def test_the_time_range_and_the_profile_change_the_numbers(site: Site, browser: Any) -> None:
    open_page(browser, site)
    total = text(browser, "#inbound-calls")
    assert int(total) > 0
    Select(browser.find_element(By.ID, "profile")).select_by_value("global")
    loaded(browser, 2)
    assert text(browser, "#inbound-calls") == "0"  # the lab's calls are under profile lab
    Select(browser.find_element(By.ID, "profile")).select_by_value("lab")
    loaded(browser, 3)
    assert text(browser, "#inbound-calls") == total
    Select(browser.find_element(By.ID, "range")).select_by_value("custom")
    since = browser.find_element(By.ID, "since")
    until = browser.find_element(By.ID, "until")
    browser.execute_script(
        "arguments[0].value = '2001-01-01T00:00:00'; arguments[1].value = '2001-01-02T00:00:00'",
        since,
        until,
    )
    browser.find_element(By.ID, "refresh").click()
    loaded(browser, 4)
    assert text(browser, "#inbound-calls") == "0"
    assert table(browser, "#failures-table") == []
    Select(browser.find_element(By.ID, "range")).select_by_value("hour")
    loaded(browser, 5)
    assert text(browser, "#inbound-calls") == total


def test_the_search_finds_a_call_by_call_id_and_shows_a_rejected_one(
    site: Site, browser: Any
) -> None:
    open_page(browser, site)
    field = browser.find_element(By.ID, "search-call-id")
    field.clear()
    field.send_keys(site.spoofed_call_id)
    browser.find_element(By.ID, "search-go").click()
    WebDriverWait(browser, 20).until(lambda d: table(d, "#search-results"))
    rows = table(browser, "#search-results")
    verified = [r for r in rows if r[1] == "verify"]
    (row,) = verified
    record = next(
        r
        for r in site.records()
        if r["call_id"] == site.spoofed_call_id and r["direction"] == "verify"
    )
    assert row[2] == site.spoofed_call_id
    assert row[7] == f"NOT ALLOWED {record['sip_code']}"
    assert record["allowed"] is False
    browser.find_elements(By.CSS_SELECTOR, "#search-results tbody tr")[rows.index(row)].click()
    details = dict(
        zip(
            [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#call-record dt")],
            [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#call-record dd")],
            strict=True,
        )
    )
    assert details["reason"] == record["reason"]
    assert details["presented_from"] == record["presented_from"]


def test_script_shaped_values_from_real_calls_are_shown_as_text_and_never_run(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    open_page(browser, site)
    nothing_ran(browser)
    # The signer whose x5u host is script-shaped is listed, as text.
    hosts = [row[0] for row in table(browser, "#upstreams-signer")]
    assert "? @ evil.example" in hosts, hosts
    # The call whose Call-ID and display name are script-shaped, found and opened.
    field = browser.find_element(By.ID, "search-call-id")
    field.clear()
    field.send_keys(XSS_CALL_ID)
    Select(browser.find_element(By.ID, "search-outcome")).select_by_value("verified")
    browser.find_element(By.ID, "search-go").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#call-record dd"))
    assert XSS_CALL_ID in [row[2] for row in table(browser, "#search-results")]
    record = text(browser, "#call-record")
    assert XSS_NAME in record
    forged = browser.find_element(By.ID, "search-call-id")
    forged.clear()
    forged.send_keys("forged-x5u")
    Select(browser.find_element(By.ID, "search-outcome")).select_by_value("")
    browser.find_element(By.ID, "search-go").click()
    WebDriverWait(browser, 20).until(lambda d: XSS_X5U in d.find_element(By.ID, "call-record").text)
    nothing_ran(browser)
    shoot(browser, tmp_path)
    # The CSP refused nothing the page itself needs: no violation was reported.
    messages = [m["message"] for m in browser.get_log("browser")]
    assert not [m for m in messages if "Content Security Policy" in m], messages


@pytest.mark.skipif(SIPP is None, reason="sipp is not installed")
def test_calls_sent_by_sipp_are_counted_found_and_their_display_name_is_text(
    site: Site, browser: Any
) -> None:
    # sipp's own Call-IDs ([call_id]: it maps the answers by them); its calls carry SIPP_NAME.
    sent = [r for r in inbound(site) if SIPP_NAME in (r["presented_from"] or "")]
    assert len(sent) == SIPP_CALLS and all(r["outcome"] == "verified" for r in sent)
    call_id = sent[0]["call_id"]
    open_page(browser, site)
    field = browser.find_element(By.ID, "search-call-id")
    field.clear()
    field.send_keys(call_id)
    Select(browser.find_element(By.ID, "search-outcome")).select_by_value("")
    browser.find_element(By.ID, "search-go").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#call-record dd"))
    rows = [r for r in table(browser, "#search-results") if r[1] == "verify"]
    assert [r[2] for r in rows] == [call_id]
    assert SIPP_NAME in text(browser, "#call-record")
    nothing_ran(browser)
    assert browser.execute_script("return window.__xss") is None


def test_without_the_admin_key_the_page_is_401(site: Site, browser: Any) -> None:
    for path in ("/dashboard/", "/dashboard/api/traffic"):
        request = urllib.request.Request(f"http://127.0.0.1:{site.rest}{path}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic")
    lab_key = (site.lab.directory / "secrets" / "rest-api-key").read_text().strip()
    authorize(browser, lab_key)  # a key, but not an admin one
    browser.get(site.url)
    # Chromium answers the Basic challenge of the 401 with nothing: an empty page.
    assert browser.find_elements(By.ID, "panel-traffic") == []
    assert "shaken" not in browser.page_source
    authorize(browser, None)
