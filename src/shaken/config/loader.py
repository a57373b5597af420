"""Read a configuration file strictly, and merge it into effective profiles.

Every problem names the file, the key and the line (``shaken.toml:14: verification.max_iat_age:
must be at least 1, got 0``), and all problems of a file are reported at once. Paths in the
file are relative to the file's directory. Nothing here talks to the network or opens keys:
``shaken config check`` goes further by loading the files the configuration names.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shaken.config.lines import key_at, key_lines
from shaken.config.schema import (
    ACME_KEYS,
    ACTION_KEYS,
    API_KEY_KEYS,
    ATTESTATION_KEYS,
    BRAND_KEYS,
    GLOBAL_ONLY,
    GLOBAL_PROFILE,
    LIFECYCLE_KEYS,
    OUTCOMES,
    PROFILE_KEYS,
    REASON_NAMES,
    REPOSITORY_KEYS,
    REVOCATION_KEYS,
    SERVER_KEYS,
    STI_PA_KEYS,
    TN_KEYS,
    TN_RANGE_KEYS,
    VERIFICATION_KEYS,
    Behavior,
    Spec,
    revocation_of,
)
from shaken.config.typed import (
    AcmeConfig,
    AttestationSettings,
    LifecycleSettings,
    ServerSettings,
    StiPaConfig,
    TnEntry,
    TnRangeEntry,
    VerificationSettings,
    toml_defaults,
)
from shaken.core.errors import ConfigurationError
from shaken.core.policy import Action, ActionPolicy, OutcomeAction
from shaken.core.rcd import RcdError, parse_rich_call_data
from shaken.core.reasons import Reason
from shaken.core.tn import NANP, is_valid_tn
from shaken.core.verify import SHAKEN, VerificationProfile
from shaken.core.x5u import X5uPolicy
from shaken.services.cert_cache import RevocationMode

__all__ = [
    "ConfigError",
    "EffectiveProfile",
    "Problem",
    "Settings",
    "effective_profile",
    "load_config",
    "parse_config",
]

_PATH_KINDS = ("path", "paths")


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.key}: {self.message}"


class ConfigError(ConfigurationError):
    """A configuration file has problems; :attr:`problems` lists each with its line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """A validated configuration: each section's keys as given (unset keys are absent)."""

    source: str = "<defaults>"
    attestation: Mapping[str, Any] = field(default_factory=dict)
    verification: Mapping[str, Any] = field(default_factory=dict)
    actions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tn_ranges: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    api_keys: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    brands: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    server: Mapping[str, Any] = field(default_factory=dict)
    repository: Mapping[str, Any] = field(default_factory=dict)
    #: The certificate lifecycle (:func:`_lifecycle_sections`).
    sti_pa: Mapping[str, Any] = field(default_factory=dict)
    acme: Mapping[str, Any] = field(default_factory=dict)
    lifecycle: Mapping[str, Any] = field(default_factory=dict)
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)
    #: The sections typed, each unset key at its default, made from the tables above (replace
    #: those): what the adapters read. A lifecycle section not in the file is None.
    server_settings: ServerSettings = field(init=False)
    tn_entries: Mapping[str, TnEntry] = field(init=False)
    tn_range_entries: Mapping[str, TnRangeEntry] = field(init=False)
    sti_pa_settings: StiPaConfig | None = field(init=False)
    acme_settings: AcmeConfig | None = field(init=False)
    lifecycle_settings: LifecycleSettings | None = field(init=False)

    def __post_init__(self) -> None:
        typed: dict[str, Any] = {
            "server_settings": ServerSettings.of(self.server),
            "tn_entries": MappingProxyType({k: TnEntry.of(v) for k, v in self.tns.items()}),
            "tn_range_entries": MappingProxyType(
                {k: TnRangeEntry.of(v) for k, v in self.tn_ranges.items()}
            ),
            "sti_pa_settings": StiPaConfig.of(self.sti_pa) if self.sti_pa else None,
            "acme_settings": AcmeConfig.of(self.acme) if self.acme else None,
            "lifecycle_settings": LifecycleSettings.of(self.lifecycle) if self.lifecycle else None,
        }
        for name, value in typed.items():
            object.__setattr__(self, name, value)

    def line_of(self, *path: str) -> int | None:
        return self.lines.get(path)


class _Reader:
    def __init__(self, source: str, lines: Mapping[tuple[str, ...], int], base: Path | None):
        self.source = source
        self.lines = lines
        self.base = base
        self.problems: list[Problem] = []

    def problem(self, path: tuple[str, ...], message: str) -> None:
        line = None
        for cut in range(len(path), 0, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                break
        if line is None:
            # A table only ever named through its sub-tables ([profiles.lab] for "profiles").
            inside = [n for p, n in self.lines.items() if p[: len(path)] == path]
            line = min(inside, default=None)
        self.problems.append(Problem(self.source, line, ".".join(path), message))

    def table(self, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(path, f"must be a table, got {type(value).__name__}")
            return {}
        return value

    def keys(
        self,
        table: Mapping[str, Any],
        specs: Mapping[str, Spec],
        path: tuple[str, ...],
        skip: tuple[str, ...] = (),
        refused: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            if key in skip:
                continue
            if refused and key in refused:
                self.problem((*path, key), f"cannot be set in a profile: {refused[key]}")
                continue
            spec = specs.get(key)
            if spec is None:
                hint = difflib.get_close_matches(key, list(specs), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.problem((*path, key), f"unknown key{extra}")
                continue
            problem = spec.check(value)
            if problem is not None:
                self.problem((*path, key), problem)
                continue
            # A path-or-URL key (server.call_log) is a path unless it names a scheme.
            resolved = spec.kind in _PATH_KINDS or (spec.kind == "path|url" and "://" not in value)
            out[key] = self.resolve(value) if resolved else value
        return out

    def resolve(self, value: Any) -> Any:
        if self.base is None:
            return value
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return str((self.base / Path(value).expanduser()).resolve())

    def actions(self, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for outcome, spec in self.table(value, path).items():
            where = (*path, outcome)
            if outcome in OUTCOMES:
                out[outcome] = self.keys(self.table(spec, where), ACTION_KEYS, where)
            elif outcome in ("attest", "reason"):
                allowed = ("A", "B", "C") if outcome == "attest" else REASON_NAMES
                group: dict[str, Any] = {}
                for name, sub in self.table(spec, where).items():
                    if name not in allowed:
                        hint = difflib.get_close_matches(name, list(allowed), n=1)
                        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                        self.problem((*where, name), f"unknown {outcome}{extra}")
                        continue
                    group[name] = self.keys(
                        self.table(sub, (*where, name)), ACTION_KEYS, (*where, name)
                    )
                out[outcome] = group
            else:
                self.problem(where, f"unknown outcome; use {', '.join(OUTCOMES)}, attest or reason")
        return out


_TOP = (
    "attestation",
    "verification",
    "profile",
    "tn",
    "tn_range",
    "api_key",
    "brand",
    "server",
    "repository",
    "sti_pa",
    "acme",
    "lifecycle",
)


def parse_config(text: str, *, source: str = "<string>", base: Path | None = None) -> Settings:
    """Validate configuration text.

    :raises ConfigError: every problem, each with its line.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(text, source, exc)]) from None
    lines = key_lines(text)
    r = _Reader(source, lines, base)
    for key in document:
        if key not in _TOP:
            hint = difflib.get_close_matches(key, list(_TOP), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            r.problem((key,), f"unknown section{extra}")
    attestation = r.keys(
        r.table(document.get("attestation", {}), ("attestation",)),
        ATTESTATION_KEYS,
        ("attestation",),
    )
    vtable = r.table(document.get("verification", {}), ("verification",))
    verification = r.keys(vtable, VERIFICATION_KEYS, ("verification",), skip=("on",))
    actions = r.actions(vtable.get("on", {}), ("verification", "on"))
    profiles: dict[str, dict[str, Any]] = {}
    for name, raw in r.table(document.get("profile", {}), ("profile",)).items():
        path = ("profile", name)
        table = r.table(raw, path)
        values = r.keys(table, PROFILE_KEYS, path, skip=("on",), refused=GLOBAL_ONLY)
        values["on"] = r.actions(table.get("on", {}), (*path, "on"))
        profiles[name] = values
    tns: dict[str, dict[str, Any]] = {}
    for tn, table in r.table(document.get("tn", {}), ("tn",)).items():
        if not is_valid_tn(tn) or len(tn) > 15:
            r.problem(("tn", tn), "a [tn] name must be a canonical TN (digits, #, *; no '+')")
            continue
        tns[tn] = r.keys(r.table(table, ("tn", tn)), TN_KEYS, ("tn", tn))
    tn_ranges: dict[str, dict[str, Any]] = {}
    for name, table in r.table(document.get("tn_range", {}), ("tn_range",)).items():
        path = ("tn_range", name)
        values = r.keys(r.table(table, path), TN_RANGE_KEYS, path)
        for required in ("start", "count"):
            if required not in values and required not in table:
                r.problem((*path, required), "is required")
        start, count = values.get("start"), values.get("count")
        lengthens = (
            start is not None
            and count is not None
            and start.isdigit()
            and len(str(int(start) + count - 1)) > len(start)
        )
        if lengthens:
            r.problem((*path, "count"), "the range must not lengthen the number (RFC 8226)")
        if start is not None and count is not None:
            tn_ranges[name] = values
    api_keys = {
        name: r.keys(r.table(table, ("api_key", name)), API_KEY_KEYS, ("api_key", name))
        for name, table in r.table(document.get("api_key", {}), ("api_key",)).items()
    }
    for name, values in api_keys.items():
        if "sha256" not in values:
            r.problem(("api_key", name, "sha256"), "is required")
        for profile in values.get("profiles", []):
            if profile not in profiles:
                r.problem(("api_key", name, "profiles"), f"no [profile.{profile}]")
    brands = {
        name: r.keys(r.table(table, ("brand", name)), BRAND_KEYS, ("brand", name))
        for name, table in r.table(document.get("brand", {}), ("brand",)).items()
    }
    for name, values in brands.items():
        _check_brand(r, name, values)
    for section, entries in (("tn", tns), ("tn_range", tn_ranges), ("profile", profiles)):
        for entry, values in entries.items():
            brand = values.get("brand")
            if brand is not None and brand not in brands:
                r.problem((section, entry, "brand"), f"no [brand.{brand}]")
    server = r.keys(r.table(document.get("server", {}), ("server",)), SERVER_KEYS, ("server",))
    sip_listeners = {*server.get("sip_sign", []), *server.get("sip_verify", [])}
    for listener, profile in server.get("listener_profiles", {}).items():
        if listener not in sip_listeners:
            r.problem(
                ("server", "listener_profiles", listener),
                "not one of the listeners in server.sip_sign or server.sip_verify",
            )
        if profile != GLOBAL_PROFILE and profile not in profiles:
            r.problem(("server", "listener_profiles", listener), f"no [profile.{profile}]")
    repository = r.keys(
        r.table(document.get("repository", {}), ("repository",)), REPOSITORY_KEYS, ("repository",)
    )
    sti_pa, acme, lifecycle = _lifecycle_sections(r, document)
    settings = Settings(
        source=source,
        attestation=attestation,
        verification=verification,
        actions=actions,
        profiles=profiles,
        tns=tns,
        tn_ranges=tn_ranges,
        api_keys=api_keys,
        brands=brands,
        server=server,
        repository=repository,
        sti_pa=sti_pa,
        acme=acme,
        lifecycle=lifecycle,
        lines=lines,
    )
    for name in profiles:
        try:
            effective_profile(settings, name)
        except ConfigurationError as exc:
            r.problem(("profile", name), str(exc))
    try:
        effective_profile(settings, None)
    except ConfigurationError as exc:
        r.problem(("verification",), str(exc))
    if r.problems:
        raise ConfigError(r.problems)
    return settings


def _lifecycle_sections(
    r: _Reader, document: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``[sti_pa]``, ``[acme]`` and ``[lifecycle]``, and what they need of each other."""
    sections = {
        name: r.keys(r.table(document.get(name, {}), (name,)), specs, (name,))
        for name, specs in (
            ("sti_pa", STI_PA_KEYS),
            ("acme", ACME_KEYS),
            ("lifecycle", LIFECYCLE_KEYS),
        )
    }
    sti_pa, acme, lifecycle = sections["sti_pa"], sections["acme"], sections["lifecycle"]
    present = {name for name in sections if name in document}
    remote = "token_command" in document.get("sti_pa", {})
    required: dict[str, tuple[str, ...]] = {
        # With a token_command another host talks to the STI-PA (its whitelisted address).
        "sti_pa": () if remote else ("url", "account_id"),
        "acme": ("directory", "account_key", "spc", "org"),
        "lifecycle": ("directory",),
    }
    for name in present:
        for key in required[name]:
            if key not in sections[name] and key not in document.get(name, {}):
                r.problem((name, key), "is required")
    if "acme" in present and "sti_pa" not in present:
        r.problem(("acme",), "needs [sti_pa]: the SPC token that answers tkauth-01 comes from it")
    if "acme" in present and "lifecycle" not in present:
        r.problem(("acme",), "needs [lifecycle]: where the certificates it obtains are kept")
    if "lifecycle" in present:
        merged = {**_LIFECYCLE_DEFAULTS, **lifecycle}
        if merged["publish"] == "directory":
            for key in ("publish_dir", "x5u_base"):
                if key not in lifecycle and key not in document["lifecycle"]:
                    r.problem(("lifecycle", key), 'is required with publish = "directory"')
        elif "publish_command" not in lifecycle and "publish_command" not in document["lifecycle"]:
            r.problem(("lifecycle", "publish_command"), 'is required with publish = "command"')
        if merged["retry_min"] > merged["retry_max"]:
            r.problem(("lifecycle", "retry_min"), "is larger than retry_max")
    # A section missing a required key is a problem above; the typed settings need them all.
    for name in present:
        if any(key not in sections[name] for key in required[name]):
            sections[name].clear()
    return sti_pa, acme, lifecycle


#: What an unset ``[lifecycle]`` key means (:class:`LifecycleSettings`' defaults).
_LIFECYCLE_DEFAULTS: dict[str, Any] = toml_defaults(LifecycleSettings)


def _check_brand(r: _Reader, name: str, values: Mapping[str, Any]) -> None:
    """What a brand needs to be signable (RFC 9795 section 5.1); file contents are checked
    when the wiring reads them."""
    path = ("brand", name)
    if "nam" not in values:
        r.problem((*path, "nam"), "is required (RFC 9795 section 5.1.1)")
    if "jcl" in values and "jcd_file" in values:
        r.problem((*path, "jcd_file"), "jcl and jcd (jcd_file) MUST NOT be used together")
    for url, copy in (("icn", "icn_file"), ("jcl", "jcl_file")):
        if copy in values and url not in values:
            r.problem((*path, copy), f"needs {url}: the URL where this content is published")
    for key in ("crn", "call_reasons"):
        reasons = [values[key]] if key == "crn" and key in values else values.get(key, [])
        for reason in reasons:
            try:
                parse_rich_call_data({"crn": reason})
            except RcdError as exc:
                r.problem((*path, key), exc.detail)
    if "nam" in values:
        try:
            parse_rich_call_data({"rcd": {"nam": values["nam"]}})
        except RcdError as exc:
            r.problem((*path, "nam"), exc.detail)


def _syntax_problem(text: str, source: str, exc: tomllib.TOMLDecodeError) -> Problem:
    """The TOML error with its line, and the key when the error is one set twice."""
    line = _toml_line(exc)
    message = str(exc)
    if line is not None and ("overwrite" in message or "twice" in message):
        path = key_at(text, line)
        if path is not None:
            first = key_lines(text).get(path)
            again = f" (first set on line {first})" if first is not None and first != line else ""
            what = "table" if "twice" in message and path == _table_at(text, line) else "key"
            return Problem(source, line, ".".join(path), f"this {what} is set twice{again}")
    return Problem(source, line, "(syntax)", message)


def _table_at(text: str, line: int) -> tuple[str, ...] | None:
    header = text.splitlines()[line - 1].strip() if 0 < line <= len(text.splitlines()) else ""
    return key_at(text, line) if header.startswith("[") else None


def _toml_line(exc: tomllib.TOMLDecodeError) -> int | None:
    # tomllib says "... (at line 3, column 7)"
    text = str(exc)
    marker = "at line "
    if marker in text:
        digits = text.split(marker, 1)[1].split(",", 1)[0].split(")", 1)[0]
        if digits.strip().isdigit():
            return int(digits)
    return None


def load_config(path: str | Path) -> Settings:
    """Read and validate a configuration file.

    :raises ConfigError: unreadable file or invalid content, naming the lines.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(file), None, "(file)", f"cannot read: {exc}")]) from None
    return parse_config(text, source=str(file), base=file.resolve().parent)


# --------------------------------------------------------------------------------------------
# Effective profiles


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectiveProfile:
    """What calls under one profile get: defaults, then the global sections, then the profile.

    ``origin`` says where each value came from (``default``, ``[verification]`` or
    ``[profile.NAME]``, with the line), for ``shaken config show --effective``.
    """

    name: str | None
    behavior: Behavior
    attestation: Mapping[str, Any]
    verification: Mapping[str, Any]
    #: ``verification`` typed: what the adapters read.
    verification_settings: VerificationSettings
    attestation_settings: AttestationSettings
    verification_profile: VerificationProfile
    actions: ActionPolicy
    origin: Mapping[str, str]
    #: What only a ``[profile.NAME]`` says (none for the global settings): the source
    #: networks and header value that select it, its attest ceiling and brand.
    sources: tuple[str, ...] = ()
    header_value: str | None = None
    attest_ceiling: str | None = None
    brand: str | None = None


#: What an unset ``[verification]`` key means: :class:`VerificationSettings`' defaults, spelled
#: as TOML for ``shaken config show --effective`` (their one place).
_VERIFICATION_DEFAULTS: dict[str, Any] = toml_defaults(VerificationSettings)
_ATTESTATION_DEFAULTS: dict[str, Any] = toml_defaults(AttestationSettings)


def _merge(
    layers: list[tuple[str, Mapping[str, Any]]], keys: Mapping[str, Spec]
) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for label, layer in layers:
        for key, value in layer.items():
            if key in keys:
                values[key] = value
                origin[key] = label
    return values, origin


def _outcome_action(spec: Mapping[str, Any]) -> OutcomeAction:
    return OutcomeAction(
        action=Action(spec.get("action", "continue")),
        reject_code=spec.get("reject_code"),
        reject_phrase=spec.get("reject_phrase"),
        display_prefix=spec.get("display_prefix", ""),
        display_suffix=spec.get("display_suffix", ""),
    )


def _merge_actions(*layers: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for outcome, spec in layer.items():
            if outcome in OUTCOMES:
                merged[outcome] = {**merged.get(outcome, {}), **spec}
            else:
                group = dict(merged.get(outcome, {}))
                for name, sub in spec.items():
                    group[name] = {**group.get(name, {}), **sub}
                merged[outcome] = group
    return merged


def effective_profile(settings: Settings, name: str | None) -> EffectiveProfile:
    """Merge defaults, ``[attestation]``/``[verification]`` and ``[profile.NAME]``.

    ``name`` None gives the global effective settings (no profile).

    :raises ConfigurationError: unknown profile, or values that do not fit together.
    """
    profile: Mapping[str, Any] = {}
    if name is not None:
        if name not in settings.profiles:
            known = ", ".join(sorted(settings.profiles)) or "none"
            raise ConfigurationError(f"no profile {name!r} (profiles: {known})")
        profile = settings.profiles[name]

    def label(section: str, key: str) -> str:
        line = settings.lines.get((*section.split("."), key))
        return f"[{section}]" + (f" line {line}" if line else "")

    vlayers: list[tuple[str, Mapping[str, Any]]] = [("default", _VERIFICATION_DEFAULTS)]
    vlayers += [(label("verification", k), {k: v}) for k, v in settings.verification.items()]
    # The one revocation setting: its old spellings (global only, as it is) folded into it.
    spelled = [k for k in REVOCATION_KEYS if k in settings.verification]
    if spelled:
        vlayers.append(
            (
                label("verification", spelled[0]),
                {"revocation": revocation_of(settings.verification)},
            )
        )
    if name is not None:
        vlayers += [(label(f"profile.{name}", k), {k: v}) for k, v in profile.items()]
    verification, vorigin = _merge(vlayers, VERIFICATION_KEYS)
    for old in ("require_crl", "crl_unavailable"):
        verification.pop(old, None)
        vorigin.pop(old, None)
    alayers: list[tuple[str, Mapping[str, Any]]] = [("default", _ATTESTATION_DEFAULTS)]
    alayers += [(label("attestation", k), {k: v}) for k, v in settings.attestation.items()]
    if name is not None:
        alayers += [(label(f"profile.{name}", k), {k: v}) for k, v in profile.items()]
    attestation, aorigin = _merge(alayers, ATTESTATION_KEYS)
    actions = _merge_actions(settings.actions, profile.get("on", {}))
    try:
        v = VerificationSettings.of(verification)
        x5u = X5uPolicy(
            allowed_ports=v.x5u_allowed_ports,
            allow_http=v.x5u_allow_http,
            any_port=v.x5u_any_port,
            allowed_hosts=tuple(h.lower() for h in v.x5u_allowed_hosts),
        )
        vp = replace(
            SHAKEN,
            max_iat_age=v.max_iat_age,
            max_future_skew=v.max_future_skew,
            date_policy=v.date_header,
            max_date_age=v.max_date_age,
            full_form_only=v.full_form_only,
            accepted_ppt=v.accepted_ppt,
            caller_sources=v.caller_sources,
            called_sources=v.called_sources,
            numbering_plan=NANP if v.numbering_plan == "nanp" else None,
            numeric_user_is_tn=v.numeric_user_is_tn,
            check_dest=v.check_dest,
            x5u_policy=x5u,
            require_tnauthlist=v.require_tnauthlist,
            enforce_certificate_profile=v.enforce_certificate_profile,
            require_crl=v.revocation is RevocationMode.HARD,
            max_div_iat_age=v.max_div_iat_age,
        )
        policy = ActionPolicy(
            verified=_outcome_action(actions.get("verified", {})),
            missing=_outcome_action(actions.get("missing", {})),
            failed=_outcome_action(actions.get("failed", {})),
            not_checked=_outcome_action(actions.get("not_checked", {})),
            by_attest={k: _outcome_action(v) for k, v in actions.get("attest", {}).items()},
            by_reason={Reason(k): _outcome_action(v) for k, v in actions.get("reason", {}).items()},
            reason_protocol=v.reason_protocol,
            tag_verstat=v.tag_verstat,
            rcd_display=v.rcd_display if v.rcd_verify else "off",
            rcd_display_prefix=v.rcd_display_prefix,
            rcd_call_info=v.rcd_call_info and v.rcd_verify,
        )
    except (ValueError, ConfigurationError) as exc:
        raise ConfigurationError(str(exc)) from None
    if v.min_cache_ttl > v.max_cache_ttl:
        raise ConfigurationError("min_cache_ttl is larger than max_cache_ttl")
    origin = {f"verification.{k}": v for k, v in vorigin.items()}
    origin.update({f"attestation.{k}": v for k, v in aorigin.items()})
    return EffectiveProfile(
        name=name,
        behavior=Behavior(profile.get("behavior", Behavior.BOTH)),
        attestation=attestation,
        verification=verification,
        verification_settings=v,
        attestation_settings=AttestationSettings.of(attestation),
        verification_profile=vp,
        actions=policy,
        origin=origin,
        sources=tuple(profile.get("sources", ())),
        header_value=profile.get("header_value"),
        attest_ceiling=profile.get("attest"),
        brand=profile.get("brand"),
    )
