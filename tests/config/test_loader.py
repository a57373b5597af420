from __future__ import annotations

from pathlib import Path

import pytest

from shaken.config import ConfigError, effective_profile, load_config, parse_config
from shaken.config.lines import key_lines
from shaken.core.errors import ConfigurationError
from shaken.core.policy import Action
from shaken.core.reasons import Reason
from shaken.core.tn import NANP
from shaken.core.verify import DatePolicy

EXAMPLE = """\
# An operator's configuration.
[attestation]
private_key = "keys/sp.key"
x5u = "https://cr.example.com/sp.pem"
attest = "B"
unknown_tn_attest = "C"

[verification]
trust_anchors = ["roots.pem", "roots.d"]
max_iat_age = 60
date_header = "check_if_present"
numbering_plan = "nanp"
tag_verstat = true

[verification.on.failed]
action = "continue_with_reason"

[verification.on.verified]
action = "alert"
display_prefix = "(Verified) "

[verification.on.reason.bad_signature]
action = "reject"
reject_code = 603

[profile.trunk]
behavior = "verify"
sources = ["10.1.0.0/16", "192.0.2.7"]
date_header = "require"
tag_verstat = false
x5u_allowed_hosts = ["cr.lab.test"]

[profile.trunk.on.missing]
action = "reject"

[profile.pbx]
behavior = "sign"
attest = "A"

[tn."12025550100"]
attest = "A"

[tn_range.lab]
start = "12025550100"
count = 100
attest = "A"

[api_key.billing]
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
tns = ["12025550100"]
profiles = ["pbx"]

[server]
sip_sign = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
sip_verify = ["udp:127.0.0.1:5062"]
rest = ["http:127.0.0.1:8080"]
max_in_flight = 500
"""


def test_example_parses_and_merges(tmp_path: Path) -> None:
    file = tmp_path / "shaken.toml"
    file.write_text(EXAMPLE)
    settings = load_config(file)
    assert settings.attestation["private_key"] == str(tmp_path / "keys" / "sp.key")
    assert settings.verification["trust_anchors"] == [
        str(tmp_path / "roots.pem"),
        str(tmp_path / "roots.d"),
    ]
    glob = effective_profile(settings, None)
    assert glob.verification_profile.numbering_plan == NANP
    assert glob.verification_profile.date_policy is DatePolicy.CHECK_IF_PRESENT
    assert glob.actions.failed.action is Action.CONTINUE_WITH_REASON
    assert glob.actions.by_reason[Reason.BAD_SIGNATURE].reject_code == 603
    trunk = effective_profile(settings, "trunk")
    assert trunk.behavior == "verify"
    assert trunk.verification_profile.date_policy is DatePolicy.REQUIRE
    assert trunk.actions.tag_verstat is False  # a profile's false overrides a global true
    assert trunk.actions.missing.action is Action.REJECT
    assert trunk.actions.verified.display_prefix == "(Verified) "  # inherited
    assert trunk.verification_profile.x5u_policy.allowed_hosts == ("cr.lab.test",)
    assert trunk.origin["verification.date_header"].startswith("[profile.trunk] line ")
    assert trunk.origin["verification.max_iat_age"] == "[verification] line 10"
    assert trunk.origin["verification.max_future_skew"] == "default"
    assert effective_profile(settings, "pbx").attestation["attest"] == "A"
    assert settings.tn_ranges["lab"]["count"] == 100


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="t.toml")
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[verification]\nmax_iat_ag = 60\n",
            "t.toml:2: verification.max_iat_ag: unknown key (did you mean 'max_iat_age'?)",
        ),
        (
            "[verification]\nmax_iat_age = 0\n",
            "t.toml:2: verification.max_iat_age: must be at least 1, got 0",
        ),
        (
            '[attestation]\nattest = "D"\n',
            "t.toml:2: attestation.attest: must be one of 'A', 'B', 'C', got 'D'",
        ),
        (
            '[attestation]\nx5u = "ftp://x"\n',
            "t.toml:2: attestation.x5u: must be an https URL (verifiers fetch nothing else), got 'ftp://x'",
        ),
        (
            "[verificaton]\n",
            "t.toml:1: verificaton: unknown section (did you mean 'verification'?)",
        ),
        (
            '[tn."+1202"]\n',
            "t.toml:1: tn.+1202: a [tn] name must be a canonical TN (digits, #, *; no '+')",
        ),
        (
            '[tn_range.x]\nstart = "10"\ncount = 91\n',
            "t.toml:3: tn_range.x.count: the range must not lengthen the number (RFC 8226)",
        ),
        (
            '[server]\nsip_sign = ["udp:127.0.0.1"]\n',
            "t.toml:2: server.sip_sign: item 0: must look like 'udp:127.0.0.1:5060', got 'udp:127.0.0.1'",
        ),
        (
            '[verification.on.failed]\naction = "rejct"\n',
            "t.toml:2: verification.on.failed.action: must be one of 'continue', 'reject', 'continue_with_reason', 'alert', got 'rejct'",
        ),
        (
            '[verification.on.reason.bad_sig]\naction = "reject"\n',
            "t.toml:1: verification.on.reason.bad_sig: unknown reason (did you mean 'bad_signature'?)",
        ),
        (
            "[verification.on.failed]\nreject_code = 200\n",
            "t.toml:2: verification.on.failed.reject_code: must be at least 400 and at most 699, got 200",
        ),
        (
            '[api_key.a]\nsha256 = "00"\n',
            "t.toml:2: api_key.a.sha256: must be the SHA-256 of the key, as 64 hex digits",
        ),
        (
            "[verification]\nmin_cache_ttl = 9\nmax_cache_ttl = 5\n",
            "t.toml:1: verification: min_cache_ttl is larger than max_cache_ttl",
        ),
        (
            "[verification]\nmax_iat_age = \n",
            "t.toml:2: (syntax): Invalid value (at line 2, column 15)",
        ),
    ],
)
def test_each_problem_names_file_line_and_key(text: str, expected: str) -> None:
    assert expected in _problems(text)


def test_all_problems_are_reported_together() -> None:
    problems = _problems("[attestation]\nattest = 1\nfoo = 2\n[verification]\nmax_iat_age = -5\n")
    assert len(problems) == 3
    assert [p.split(":")[1] for p in problems] == ["2", "3", "5"]


def test_unknown_profile_is_an_error() -> None:
    settings = parse_config('[profile.a]\nbehavior = "sign"\n')
    with pytest.raises(ConfigurationError):
        effective_profile(settings, "b")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "missing.toml")
    assert "cannot read" in str(exc.value)


def test_key_lines_scanner() -> None:
    text = (
        '[a]\nx = 1\n"quoted key" = 2\nlist = [\n  1,\n  2,\n]\nafter = 3\n'
        "[b.'c d'.e]\nz.y = 1\ns = '''\n[not.a.table]\n'''\nt = 1\n"
    )
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("a", "x")] == 2 and lines[("a", "quoted key")] == 3
    assert lines[("a", "list")] == 4 and lines[("a", "after")] == 8
    assert lines[("b", "c d", "e")] == 9 and lines[("b", "c d", "e", "z", "y")] == 10
    assert ("not", "a", "table") not in lines and lines[("b", "c d", "e", "t")] == 14


# Issue 17 item 14: configuration gaps, each once accepted or reported without its key/line.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[profile.p]\nsources = ["192.168.1.0/2"]\n',
            "t.toml:2: profile.p.sources: item 0: '192.168.1.0/2' has host bits set: it would"
            " mean 192.0.0.0/2 (write the network address, or /32 (/128) for one host)",
        ),
        (
            '[server]\nrest = ["udp:127.0.0.1:8080"]\n',
            "t.toml:2: server.rest: item 0: 'udp:127.0.0.1:8080' is not an HTTP listener"
            " (http or https)",
        ),
        (
            '[server]\nsip_sign = ["https:127.0.0.1:5060"]\n',
            "t.toml:2: server.sip_sign: item 0: 'https:127.0.0.1:5060' is not a SIP listener"
            " (udp, tcp or tls)",
        ),
        (
            '[repository]\nlisten = "tcp:127.0.0.1:8443"\n',
            "t.toml:2: repository.listen: 'tcp:127.0.0.1:8443' is not an HTTP listener"
            " (http or https)",
        ),
        (
            '[attestation]\nx5u = "https://cr.example.com/sp.pem?v=2"\n',
            "t.toml:2: attestation.x5u: must not have a query string (verifiers refuse one):"
            " 'https://cr.example.com/sp.pem?v=2'",
        ),
        (
            '[tn."12025550100"]\nx5u = "https://cr.example.com/sp.pem#a"\n',
            "t.toml:2: tn.12025550100.x5u: must not have a fragment (verifiers refuse one):"
            " 'https://cr.example.com/sp.pem#a'",
        ),
        (
            '[attestation]\nx5u = "https://me:pw@cr.example.com/sp.pem"\n',
            "t.toml:2: attestation.x5u: must not carry a user name or password:"
            " 'https://me:pw@cr.example.com/sp.pem'",
        ),
        (
            '[attestation]\nx5u = "http://cr.example.com/sp.pem"\n',
            "t.toml:2: attestation.x5u: must be an https URL (verifiers fetch nothing else),"
            " got 'http://cr.example.com/sp.pem'",
        ),
        (
            '[server]\nworkers = 2\ncall_log = "x"\nworkers = 3\n',
            "t.toml:4: server.workers: this key is set twice (first set on line 2)",
        ),
        (
            "[server]\nworkers = 2\n\n[server]\nretry_after = 3\n",
            "t.toml:4: server: this table is set twice (first set on line 1)",
        ),
        (
            '[attestation]\nattest = "A"\n\n[profiles.lab]\nbehavior = "both"\n',
            "t.toml:4: profiles: unknown section (did you mean 'profile'?)",
        ),
    ],
)
def test_17_14_configuration_gaps_are_refused_with_key_and_line(text: str, expected: str) -> None:
    assert _problems(text) == [expected]


def test_17_14_a_host_address_is_still_a_network() -> None:
    settings = parse_config('[profile.p]\nsources = ["192.0.2.7", "2001:db8::1", "10.0.0.0/8"]\n')
    assert settings.profiles["p"]["sources"] == ["192.0.2.7", "2001:db8::1", "10.0.0.0/8"]
