"""The consensus worker's knobs, read from the environment (and optionally a JSON file).

SGLang's command line cannot be extended by a plugin, so the knobs travel as environment variables,
which reach every process SGLang spawns:

- ``CONSENSUS_CONFIG=path.json``: a file ``{"drafter": ..., "grouping": {...}, "draft": {...},
  "log_interval_s": ...}``; every key optional.
- ``CONSENSUS_DRAFTER``: ``consensus`` (default), ``prompt_lookup`` (own history only) or
  ``ngram_corpus`` (SGLang's own NgramCorpus, under this worker's verification: for comparisons).
- ``CONSENSUS_GROUPING``: ``on`` (default) or ``off`` (no request has siblings).
- ``CONSENSUS_GROUPING_MIN_COMMON_PREFIX``, ``CONSENSUS_GROUPING_MIN_COMMON_FRACTION``.
- ``CONSENSUS_DRAFT_<FIELD>``: any :class:`~sgl_consensus.drafting.DraftConfig` field, e.g.
  ``CONSENSUS_DRAFT_ALPHA=0.7``, ``CONSENSUS_DRAFT_FUZZY_MAX_EDITS=1``. The draft size is SGLang's
  ``--speculative-num-draft-tokens`` and cannot be set here.
- ``CONSENSUS_LOG_INTERVAL``: seconds between metrics log lines (default 30; 0 = off).
- ``CONSENSUS_LEAD``: lead-lag scheduling of sibling groups (``sgl_consensus.lead_lag``): the
  followers of a tagged or ``n > 1`` group wait until their leader has this many output tokens
  (``inf``: until it finished). Default 0 = off; a request's ``custom_params["consensus_lead"]``
  overrides it.
- ``CONSENSUS_ADAPTIVE``: ``on`` (default): the verify width of each step is chosen from the
  evidence and the measured step cost (``sgl_consensus.adaptive``), down to 1 (no drafts); ``off``:
  always ``--speculative-num-draft-tokens``; ``cycle``: the allowed widths in turn, one per step
  (a diagnostic: exactness under any width sequence).
- ``CONSENSUS_ADAPTIVE_WIDTHS``: the widths allowed, comma-separated, each in [1, draft tokens]
  (default: 1, 2, 4, ... up to ``--speculative-num-draft-tokens``, and that number).
- ``CONSENSUS_PLAIN_DECODE``: how a width-1 step (no drafts) runs. ``auto`` (default): as SGLang's
  plain decode forward on CPU (``sgl_consensus.adapter.plain_decode``), as a root-only verify on GPU,
  where the verify replays CUDA graphs and a decode forward under speculation would not; ``on`` /
  ``off``: always / never plain.
- ``CONSENSUS_CHECK_TP``: ``on`` compares a hash of every tensor-parallel rank's trees each step and
  stops on the first divergence (a debug guard; default ``off``).
- ``CONSENSUS_DP_DISPATCH``: how requests are spread over data-parallel ranks (``--dp-size``).
  ``group`` (default): every request of one sibling group on one rank (``adapter.dp_dispatch``);
  ``sglang``: SGLang's own policy for every request (a baseline: groups split across ranks).
- ``CONSENSUS_CORE``: the drafter's data plane. ``auto`` (default): the C++ core
  (``drafting/native``, compiled into the cache on first use) where it builds, else the Python
  reference with one warning; ``native``: the C++ core or a start-up error; ``python``: the reference.
- ``CONSENSUS_ISOLATION``: what drafts may carry between requests. ``tenant`` (default): nothing
  crosses tenants (``custom_params["consensus_tenant"]``; requests without one share the default
  tenant). ``strict``: nothing crosses declared sibling groups (tags, ``n > 1``): no global corpus,
  no prefix clustering of untagged requests, a tag never revives a group that has ended, and a
  fixed verify width (the adaptive width is chosen per batch from all requests' drafts).

Environment variables override the file. Unknown ``CONSENSUS_*`` names and bad values raise
:class:`SettingsError` naming the variable and the value, at server start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sgl_consensus.drafting import DraftConfig
from sgl_consensus.grouping import ISOLATION_MODES, GroupingConfig
from sgl_consensus.lead_lag import parse_lead

PREFIX = "CONSENSUS_"
DRAFTERS = ("consensus", "prompt_lookup", "ngram_corpus")
ADAPTIVE_MODES = ("on", "off", "cycle")
PLAIN_DECODE_MODES = ("auto", "on", "off")
DP_DISPATCH_MODES = ("group", "sglang")
CORE_MODES = ("auto", "native", "python")
# Variables of this prefix that are not worker knobs.
_OTHER_VARS = {"CONSENSUS_CPU", "CONSENSUS_CACHE", "CONSENSUS_VENV", "CONSENSUS_CONFIG", "CONSENSUS_CPU_OVERLAP",
               "CONSENSUS_CPU_SPAWN", "CONSENSUS_TEST_WORKERS"}


class SettingsError(ValueError):
    """A bad consensus knob; the message names the variable (or file key) and the value."""


MIN_DRAFT_TOKENS, MAX_DRAFT_TOKENS = 2, 64


def check_draft_width(width: Any, flag: str = "--speculative-num-draft-tokens") -> int:
    """The documented range of the draft width (tree nodes, root included): below 2 there is
    nothing to draft; above 64 a verify step costs more than any draft can win back."""
    try:
        number = int(width) if isinstance(width, str) else width
    except ValueError:
        number = None
    if not isinstance(number, int) or isinstance(number, bool) or not MIN_DRAFT_TOKENS <= number <= MAX_DRAFT_TOKENS:
        raise SettingsError(f"{flag} must be an integer in [{MIN_DRAFT_TOKENS}, {MAX_DRAFT_TOKENS}] for "
                            f"--speculative-algorithm consensus, got {width!r}")
    return number


@dataclass(frozen=True)
class WorkerSettings:
    drafter: str = "consensus"
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    draft: Mapping[str, Any] = field(default_factory=dict)  # DraftConfig fields, num_draft_tokens excluded
    log_interval_s: float = 30.0
    lead_tokens: float = 0  # lead-lag policy: 0 = off, math.inf = the leader finishes first
    isolation: str = "tenant"  # see ISOLATION_MODES and the module docstring
    adaptive: str = "on"  # see ADAPTIVE_MODES
    adaptive_widths: tuple[int, ...] | None = None  # None: powers of two up to the draft width
    plain_decode: str = "auto"  # see PLAIN_DECODE_MODES
    check_tp: bool = False  # compare every TP rank's trees each step (debug guard)
    dp_dispatch: str = "group"  # see DP_DISPATCH_MODES
    core: str = "auto"  # see CORE_MODES

    def decodes_plainly(self, on_cpu: bool) -> bool:
        """Whether width-1 steps run as plain decode forwards on this device."""
        return self.plain_decode == "on" or (self.plain_decode == "auto" and on_cpu)

    def widths(self, num_draft_tokens: int) -> tuple[int, ...]:
        """The verify widths this worker may use (validated against the draft width)."""
        from sgl_consensus.adaptive import width_set

        if self.adaptive == "off":
            return (num_draft_tokens,)
        try:
            return width_set(num_draft_tokens, self.adaptive_widths)
        except ValueError as exc:
            raise SettingsError(f"CONSENSUS_ADAPTIVE_WIDTHS: {exc}") from None

    def draft_config(self, num_draft_tokens: int) -> DraftConfig:
        return DraftConfig.from_mapping({**self.draft, "num_draft_tokens": num_draft_tokens})


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no"):
        return False
    raise SettingsError(f"{name} must be on or off, got {value!r}")


def _parse_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{name} must be a finite number, got {value!r}")
    return number


def _read_file(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"CONSENSUS_CONFIG={path!r} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"CONSENSUS_CONFIG={path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"CONSENSUS_CONFIG={path!r} must hold a JSON object")
    unknown = set(data) - {"drafter", "grouping", "draft", "log_interval_s", "lead_tokens", "isolation", "adaptive",
                           "adaptive_widths", "plain_decode", "check_tp", "dp_dispatch", "core"}
    if unknown:
        raise SettingsError(f"CONSENSUS_CONFIG={path!r} has unknown keys {sorted(unknown)}")
    for section in ("grouping", "draft"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise SettingsError(f"CONSENSUS_CONFIG={path!r}: {section!r} must be a JSON object, "
                                f"got {type(data[section]).__name__} {data[section]!r}")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {"grouping": {}, "draft": {}}
    for name, value in env.items():
        if not name.startswith(PREFIX) or name in _OTHER_VARS:
            continue
        key = name[len(PREFIX):].lower()
        if key == "drafter":
            raw["drafter"] = value
        elif key == "grouping":
            raw["grouping"]["enabled"] = _parse_bool(name, value)
        elif key.startswith("grouping_"):
            raw["grouping"][key[len("grouping_"):]] = value
        elif key.startswith("draft_"):
            raw["draft"][key[len("draft_"):]] = value
        elif key == "log_interval":
            raw["log_interval_s"] = value
        elif key == "lead":
            raw["lead_tokens"] = value
        elif key == "isolation":
            raw["isolation"] = value
        elif key == "adaptive":
            raw["adaptive"] = value
        elif key == "adaptive_widths":
            raw["adaptive_widths"] = value
        elif key == "plain_decode":
            raw["plain_decode"] = value
        elif key == "check_tp":
            raw["check_tp"] = _parse_bool(name, value)
        elif key == "dp_dispatch":
            raw["dp_dispatch"] = value
        elif key == "core":
            raw["core"] = value
        else:
            raise SettingsError(f"unknown setting {name}={value!r}; see sgl_consensus.settings for the list")
    return raw


def _grouping(values: Mapping[str, Any]) -> GroupingConfig:
    fields = {f.name for f in dataclasses.fields(GroupingConfig)}
    unknown = {str(k) for k in values} - fields
    if unknown:
        raise SettingsError(f"unknown grouping setting(s) {sorted(unknown)}; valid: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"CONSENSUS_GROUPING_{key.upper()}"
        if key in ("enabled", "prefix_clusters", "revive_tags"):
            kwargs[key] = _parse_bool(name, value)
        elif key == "min_common_prefix":
            try:
                kwargs[key] = int(value)
            except (TypeError, ValueError):
                raise SettingsError(f"{name} must be an integer, got {value!r}") from None
        else:
            kwargs[key] = _parse_float(name, value)
    try:
        return GroupingConfig(**kwargs)
    except ValueError as exc:
        found = re.search(r"GroupingConfig\.(\w+)", str(exc))
        name = f"CONSENSUS_GROUPING_{found.group(1).upper()}" if found else "grouping setting"
        raise SettingsError(f"{name}: {exc}") from None


def _draft_error(exc: Exception, sources: Mapping[str, str], values: Mapping[str, Any]) -> SettingsError:
    """A DraftConfig error, with the variable (or file key) that set the field named first."""
    found = re.search(r"DraftConfig(?: has no field '|\.)(\w+)", str(exc))
    field_name = found.group(1).lower() if found else None
    if field_name in sources:
        return SettingsError(f"{sources[field_name]}={values[field_name]!r}: {exc}")
    return SettingsError(f"bad draft setting: {exc}")


def _adaptive(value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in ADAPTIVE_MODES:
        raise SettingsError(f"CONSENSUS_ADAPTIVE must be one of {list(ADAPTIVE_MODES)}, got {value!r}")
    return mode


def _plain_decode(value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in PLAIN_DECODE_MODES:
        raise SettingsError(f"CONSENSUS_PLAIN_DECODE must be one of {list(PLAIN_DECODE_MODES)}, got {value!r}")
    return mode


def _dp_dispatch(value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in DP_DISPATCH_MODES:
        raise SettingsError(f"CONSENSUS_DP_DISPATCH must be one of {list(DP_DISPATCH_MODES)}, got {value!r}")
    return mode


def _core(value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in CORE_MODES:
        raise SettingsError(f"CONSENSUS_CORE must be one of {list(CORE_MODES)}, got {value!r}")
    return mode


def _widths(value: Any) -> tuple[int, ...] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        widths = tuple(sorted({int(str(item).strip()) for item in items}))
    except (TypeError, ValueError):
        widths = ()
    if not widths or widths[0] < 1 or widths[-1] > MAX_DRAFT_TOKENS:
        raise SettingsError(f"CONSENSUS_ADAPTIVE_WIDTHS must be integers in [1, {MAX_DRAFT_TOKENS}], "
                            f"comma-separated, got {value!r}")
    return widths


def _isolation(value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in ISOLATION_MODES:
        raise SettingsError(f"CONSENSUS_ISOLATION must be one of {list(ISOLATION_MODES)}, got {value!r}")
    return mode


def load_settings(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Read and validate the knobs; raises :class:`SettingsError` on anything wrong."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {"grouping": {}, "draft": {}}
    draft_sources: dict[str, str] = {}  # draft field -> where its value came from, for error messages
    if env.get("CONSENSUS_CONFIG"):
        from_file = _read_file(env["CONSENSUS_CONFIG"])
        merged.update({k: v for k, v in from_file.items() if k not in ("grouping", "draft")})
        merged["grouping"].update(from_file.get("grouping") or {})
        merged["draft"].update(from_file.get("draft") or {})
        draft_sources.update({str(k).lower(): f"CONSENSUS_CONFIG draft.{k}" for k in from_file.get("draft") or {}})
    overrides = _env_overrides(env)
    merged["grouping"].update(overrides["grouping"])
    merged["draft"].update(overrides["draft"])
    draft_sources.update({str(k).lower(): f"CONSENSUS_DRAFT_{str(k).upper()}" for k in overrides["draft"]})
    merged.update({k: v for k, v in overrides.items() if k not in ("grouping", "draft")})

    drafter = str(merged.get("drafter", "consensus")).strip().lower()
    if drafter not in DRAFTERS:
        raise SettingsError(f"CONSENSUS_DRAFTER must be one of {list(DRAFTERS)}, got {merged['drafter']!r}")
    isolation = _isolation(merged.get("isolation", "tenant"))
    draft = {str(k).lower(): v for k, v in merged["draft"].items()}
    if "num_draft_tokens" in draft:
        raise SettingsError("the draft size is SGLang's --speculative-num-draft-tokens; "
                            f"remove {draft_sources['num_draft_tokens']}")
    try:
        config = DraftConfig.from_mapping(draft)  # validate now, with the default size
    except (TypeError, ValueError) as exc:
        raise _draft_error(exc, draft_sources, draft) from None
    grouping = _grouping(merged["grouping"])
    if isolation == "strict":
        # Nothing may cross declared sibling groups: no global corpus, no prefix clusters.
        if "use_global" in draft and config.use_global:
            raise SettingsError(f"{draft_sources['use_global']}={draft['use_global']!r} contradicts "
                                "CONSENSUS_ISOLATION=strict (no global corpus under strict isolation)")
        draft["use_global"] = False
        grouping = dataclasses.replace(grouping, prefix_clusters=False, revive_tags=False)
    interval = _parse_float("CONSENSUS_LOG_INTERVAL", merged.get("log_interval_s", 30.0))
    if interval < 0:
        raise SettingsError(f"CONSENSUS_LOG_INTERVAL must be >= 0, got {interval}")
    try:
        lead = parse_lead(merged.get("lead_tokens", 0), "CONSENSUS_LEAD")
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    adaptive = _adaptive(merged.get("adaptive", "off" if isolation == "strict" else "on"))
    if isolation == "strict" and adaptive != "off":
        # The width is one choice per batch, learned from every request's outcomes: with it, a
        # request's verify steps would depend on other requests' drafts.
        raise SettingsError(f"CONSENSUS_ADAPTIVE={adaptive} contradicts CONSENSUS_ISOLATION=strict (the width is "
                            "chosen per batch from all requests' drafts; strict isolation verifies a fixed width)")
    return WorkerSettings(drafter=drafter, grouping=grouping, draft=draft, log_interval_s=interval,
                          lead_tokens=lead, isolation=isolation, adaptive=adaptive,
                          adaptive_widths=_widths(merged.get("adaptive_widths")),
                          plain_decode=_plain_decode(merged.get("plain_decode", "auto")),
                          check_tp=_parse_bool("CONSENSUS_CHECK_TP", merged.get("check_tp", False)),
                          dp_dispatch=_dp_dispatch(merged.get("dp_dispatch", "group")),
                          core=_core(merged.get("core", "auto")))
