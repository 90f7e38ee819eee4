"""Typed configuration, validated once at start; unknown keys are errors.

Over 400 lines, kept whole on purpose: the schema is one document, section
by section in the order of configs/default.yaml (a test keeps the two in
step, and the command line's flags take their help from its descriptions),
and loading (YAML, dotted overrides, one-line errors, output paths kept
inside ``output_dir``) walks the same models. Splitting it would put the
field that a message names in one file and the message in another.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

# Marks a setting that never changes a record (where a run writes, how it queues, the device): ``label``'s
# resume key leaves it out, so changing it does not relabel an archive. Unmarked settings are in the key.
NO_OUTPUT: dict[str, Any] = {"output": False}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WindowConfig(_Strict):
    length: float = Field(2.0, gt=0, description="window length, seconds")
    hop: float = Field(0.5, gt=0, description="step between window starts, seconds")
    fps: float = Field(4.0, gt=0, le=120, description="video frames sampled per second (by PTS)")
    min_audio: float = Field(0.48, ge=0, description="seconds of audio a window needs to count as having audio")
    max_side: int = Field(640, ge=32, description="decoded frames are scaled so the long side is at most this")
    short_side: int | None = Field(
        None,
        ge=32,
        description="decoded frames are scaled so the short side is at most "
        "this; none: the side the video encoder reads (256 for EfficientNet-Lite0)",
    )
    adapt: bool = Field(
        True,
        description="a clip video encoder (r2plus1d_18 ...) sets fps and length to the clip "
        "it reads (16 frames at 15 fps: 1.067 s); false keeps these settings",
    )

    @model_validator(mode="after")
    def _hop_fits(self) -> WindowConfig:
        if self.hop > self.length:
            raise ValueError(f"hop ({self.hop}) must not exceed length ({self.length})")
        return self


class ModalityConfig(_Strict):
    encoder: str
    pool: Literal["mean", "max"] = Field(description="temporal pooling of scores and embeddings in a window")
    weight: float = Field(0.5, ge=0, description="weight in decision-level fusion")
    enabled: bool = True


class AudioConfig(ModalityConfig):
    encoder: str = "yamnet"
    pool: Literal["mean", "max"] = "max"  # short sounds (a bark) fill one patch of several


class VideoConfig(ModalityConfig):
    encoder: str = "efficientnet_lite0"
    pool: Literal["mean", "max"] = "mean"


class SpeechConfig(_Strict):
    """The speech gate: speech probability per window, in records and alert rules."""

    enabled: bool = Field(
        False,
        description="add each window's speech probability (field 'speech'); "
        "on by itself when an alert rule has a speech gate",
    )
    encoder: str = "silero_vad"


class DetectorConfig(_Strict):
    """The person detector beside the classifier: it drives the ``person`` category and the record's ``detector``."""

    enabled: bool | None = Field(
        None,
        description="null (auto): on for live sources (cameras, streams, "
        "--realtime), off for files; true/false: always/never",
    )
    encoder: str = "ssdlite_person"
    fps: float = Field(
        2.0,
        gt=0,
        le=120,
        description="frames per second the detector reads (at most the window's "
        "fps); in between it reuses its last result",
    )
    threshold: float = Field(
        0.7,
        ge=0,
        le=1,
        description="score a box needs to be counted and drawn "
        "(Frigate's default for a person; Big Buck Bunny's upright rabbit reached 0.55)",
    )
    weight: float = Field(0.5, ge=0, description="weight in decision-level fusion, as the camera's evidence")
    defer: bool = Field(
        True,
        description="on live sources, frames the worker has no time for take the last detection "
        "(oldest-seen cameras read first; at least one look per max_age) instead of making windows "
        "late or dropped; false: every due frame is read",
    )
    max_age: float = Field(
        5.0,
        gt=0,
        description="with defer: the most seconds a moving camera goes without a detector look, however busy "
        "the worker (docs/performance.md: what a shorter floor costs in cameras)",
    )

    @model_validator(mode="before")
    @classmethod
    def _motion_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "motion" in data:
            raise ValueError("motion moved to reuse.motion (one change measure for the detector and the video encoder)")
        return data


class ReuseConfig(_Strict):
    """Work not done twice: unchanged frames reuse the video embedding and detections of the last computed frame,
    silent windows the audio result of silence (streamclf/reuse.py; docs/frame-reuse.md)."""

    enabled: bool | None = Field(
        None,
        description="null (auto): on for live sources (cameras, streams, "
        "--realtime), off for files and label; true/false: always/never",
    )
    motion: float = Field(
        0.005,
        ge=0,
        le=1,
        description="share of a small grey copy of the frame that must change "
        "since the last computed frame for the video encoder and detector to run again (0: always)",
    )
    max_age: float | None = Field(
        10.0,
        gt=0,
        description="seconds a computed result may stand for unchanged frames "
        "before it is computed again (each source gets between half and all of it, so "
        "that cameras started together do not compute at once; null: no limit)",
    )
    silence_dbfs: float = Field(
        -70.0,
        le=0,
        description="a window whose audio is quieter than this (dBFS) reuses "
        "the result of silence instead of running the audio encoders",
    )


class FusionConfig(_Strict):
    categories: str | None = Field(None, description="category map YAML; default: the built-in map")
    head: str | None = Field(None, description="trained head folder (streamclf train); replaces the category map")
    calibration: str | None = Field(
        None,
        description="zero-shot calibration file (streamclf calibrate); default: the "
        "built-in one when it matches the encoders, 'none' for raw scores",
    )
    top_k: int = Field(5, ge=1, le=50, description="labels per record (fused and per modality)")
    smoothing: float = Field(0.5, gt=0, le=1, description="EMA alpha across windows; 1 = off")


class SourcesConfig(_Strict):
    """How live sources are opened and kept alive (files ignore most of this)."""

    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout: float = Field(10.0, gt=0, description="seconds to open a source before giving up on this try")
    stall_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds without data before a live source counts as stalled "
        "and is reopened (Frigate's watchdog: 20 s)",
    )
    backoff_initial: float = Field(0.5, gt=0, description="first reconnect delay, seconds (doubles, with jitter)")
    backoff_max: float = Field(
        5.0,
        gt=0,
        description="longest reconnect delay, seconds: a camera that comes back "
        "is live again within about this (the wait is 50-100 % of it, jittered)",
    )
    max_reconnects: int | None = Field(
        None, ge=0, description="give up after this many reconnects in a row; null = never"
    )
    realtime: bool = Field(
        False, description="pace files at real time and treat them like live feeds (drop when behind)"
    )
    status_interval: float = Field(
        10.0, gt=0, description="seconds between status records with counters for live sources"
    )
    file_timeout: float = Field(
        120.0,
        gt=0,
        description="label: seconds a file may decode without yielding anything "
        "before its decoding counts as hung (the file fails, the batch goes on)",
    )


class WebhookConfig(_Strict):
    url: str = Field(description="http(s) endpoint that receives one POST per record (JSON)")
    events: Literal["all", "alerts", "labels"] = Field(
        "all", description="which records to send (status always goes with all)"
    )
    secret: str | None = Field(None, description="HMAC-SHA256 key: signs each body in the X-Streamclf-Signature header")
    secret_env: str | None = Field(
        None,
        description="name of the environment variable holding the HMAC key "
        "(keeps the key out of config files and the command line)",
    )
    spool: str | None = Field(
        None,
        description="durable on-disk queue (SQLite); delivery resumes from it; "
        "default: one per URL in the user's state folder",
    )
    timeout: float = Field(5.0, gt=0, description="seconds per request")
    backoff_max: float = Field(30.0, gt=0, description="longest retry delay, seconds")
    drain_timeout: float = Field(
        10.0, ge=0, description="seconds to keep delivering at shutdown; the rest stays spooled"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")

    @model_validator(mode="after")
    def _scheme(self) -> WebhookConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.secret_env is not None:
            if self.secret is not None:
                raise ValueError("give secret or secret_env, not both")
            if not os.environ.get(self.secret_env):
                raise ValueError(f"secret_env: environment variable {self.secret_env} is not set or empty")
        return self

    def signing_key(self) -> str | None:
        """The HMAC key: ``secret``, or the value of the ``secret_env`` variable."""
        return os.environ[self.secret_env] if self.secret_env else self.secret

    def spool_path(self) -> Path:
        """``spool``, or by default a file in the user's state folder named after the URL.

        Not the current folder: a run started elsewhere must find the records still
        waiting, and two receivers must never share a spool (records would cross over).
        """
        if self.spool is not None:
            return Path(self.spool)
        from platformdirs import user_state_dir

        name = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return Path(user_state_dir("streamclf")) / "webhook" / f"spool-{name}.db"


class MqttConfig(_Strict):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    prefix: str = Field("streamclf", description="topics: PREFIX/<source>/labels|alerts|status, PREFIX/availability")
    qos: Literal[0, 1, 2] = 1
    keepalive: int = Field(30, ge=5)
    client_id: str | None = None
    discovery: bool = Field(
        True,
        description="publish Home Assistant MQTT discovery: each source becomes a device "
        "with its top label, its state and an on/off sensor per alert label, without YAML",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        description="Home Assistant's discovery prefix (its MQTT "
        "integration setting); topics DISCOVERY_PREFIX/<component>/<node>/<object>/config",
    )


class SqliteConfig(_Strict):
    path: str = Field("streamclf-events.db", description="event store; query with streamclf events")
    labels: bool = Field(False, description="also store every window record, not only alerts and status")


class SinksConfig(_Strict):
    jsonl: str | None = Field(None, description="append records to this JSON-lines file (- for stdout)")
    webhook: WebhookConfig | None = None
    mqtt: MqttConfig | None = None
    sqlite: SqliteConfig | None = None


class AlertOverride(_Strict):
    """Per-source changes to one rule (e.g. a noisier camera needs a higher score)."""

    min_score: float | None = Field(None, ge=0, le=1)
    min_windows: int | None = Field(None, ge=1)
    cooldown: float | None = Field(None, ge=0)
    loudness_dbfs: float | None = Field(None, le=0)
    enabled: bool = True


class SpeechGate(_Strict):
    """Bounds on a window's speech probability for it to count towards an alert."""

    min: float | None = Field(None, ge=0, le=1, description="only windows with at least this speech probability")
    max: float | None = Field(None, ge=0, le=1, description="only windows with at most this speech probability")

    def admits(self, speech: float | None) -> bool:
        """A window without audio has no speech (0)."""
        p = speech or 0.0
        return (self.min is None or p >= self.min) and (self.max is None or p <= self.max)


class AlertRule(_Strict):
    """When a label raises an event: the fused score, or one modality alone, above its threshold.

    The conditions are alternatives (any of them counts): ``{label: dog,
    min_score: 0.4, audio: 0.5}`` fires on a fused 0.4 or on the microphone
    alone hearing a dog at 0.5, so a dog barking off-camera still alerts.
    Without ``audio``/``video`` the fused condition is on at 0.5; with one of
    them and no ``min_score`` only the modality conditions count.
    """

    label: str = Field(description="fused label (category) that raises the alert")
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="fused score a window needs to count towards "
        "the alert (default 0.5 when neither audio nor video is given)",
    )
    audio: float | None = Field(None, ge=0, le=1, description="or: the audio encoder's score for the label")
    video: float | None = Field(None, ge=0, le=1, description="or: the video encoder's score for the label")
    min_windows: int = Field(2, ge=1, description="consecutive windows above a threshold to start the event")
    end_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="hysteresis: the fused score below which the "
        "event may end (default 0.8 x min_score; audio/video end at 0.8 x theirs)",
    )
    end_windows: int = Field(2, ge=1, description="consecutive windows below end_score to end the event")
    cooldown: float = Field(30.0, ge=0, description="seconds after an event ends before the rule may fire again")
    loudness_dbfs: float | None = Field(
        None, le=0, description="only windows whose audio is at least this loud (dBFS) count"
    )
    speech: SpeechGate | None = Field(None, description="speech gate, e.g. {max: 0.5}: a scream that is not speech")
    pre_roll: float = Field(2.0, ge=0, description="seconds before the event in its clip")
    post_roll: float = Field(2.0, ge=0, description="seconds after the event in its clip")
    sources: dict[str, AlertOverride] = Field(default_factory=dict, description="per-source overrides, by source name")

    @model_validator(mode="before")
    @classmethod
    def _fused_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(k) is None for k in ("min_score", "audio", "video")):
            data = {**data, "min_score": 0.5}
        return data

    def thresholds(self) -> dict[str, float]:
        """The rule's conditions: ``{"fused" | "audio" | "video": threshold}``."""
        given = {"fused": self.min_score, "audio": self.audio, "video": self.video}
        return {k: v for k, v in given.items() if v is not None}


class AlertsConfig(_Strict):
    rules: list[AlertRule] = Field(default_factory=list)
    events_dir: str = Field("events", description="snapshots (JPEG) and clips (MP4/WAV) of alerts go here")
    clip: Literal["mp4", "wav", "both", "none"] = Field(
        "mp4", description="each event's clip: MP4 with picture and sound (H.264 + AAC), WAV audio, both, or none"
    )
    retain_days: float | None = Field(30.0, gt=0, description="events older than this are deleted (null: kept)")
    max_disk_mb: float | None = Field(
        2000.0,
        gt=0,
        description="the oldest events are deleted while the events folder holds more than this (null: no limit)",
    )


class Config(_Strict):
    window: WindowConfig = WindowConfig()
    audio: AudioConfig = AudioConfig()
    video: VideoConfig = VideoConfig()
    speech: SpeechConfig = SpeechConfig()
    detector: DetectorConfig = DetectorConfig()
    reuse: ReuseConfig = ReuseConfig()
    fusion: FusionConfig = FusionConfig()
    sources: SourcesConfig = Field(SourcesConfig(), json_schema_extra=NO_OUTPUT)
    sinks: SinksConfig = Field(SinksConfig(), json_schema_extra=NO_OUTPUT)
    alerts: AlertsConfig = Field(AlertsConfig(), json_schema_extra=NO_OUTPUT)
    output_dir: str = Field(
        ".",
        json_schema_extra=NO_OUTPUT,
        description="folder the config's output paths (sinks.jsonl, sinks.sqlite.path, "
        "sinks.webhook.spool, alerts.events_dir) are relative to; they may not leave it",
    )
    device: str = Field(
        "auto",
        json_schema_extra=NO_OUTPUT,
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="encoder arithmetic; bf16 is faster only on AVX512-BF16/AMX CPUs and GPUs, "
        "and changes some top-1 labels",
    )
    compile: bool = Field(False, description="torch.compile the encoders (tens of seconds once, then faster)")
    engine: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto",
        description="what runs the encoders: auto (the fastest installed engine that reproduces the torch "
        "module, else torch), torch, onnxruntime or openvino (docs/engines.md)",
    )
    queue_size: int = Field(64, ge=1, json_schema_extra=NO_OUTPUT, description="items per stage queue")
    batch_windows: int = Field(
        8, ge=1, json_schema_extra=NO_OUTPUT, description="windows per worker batch, across sources"
    )
    batch_timeout: float = Field(
        0.02, ge=0, json_schema_extra=NO_OUTPUT, description="seconds the worker waits to fill a batch"
    )


class ConfigError(ValueError):
    """A config problem, already phrased as one line naming the file and key."""


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read YAML (if given), apply dotted overrides like ``window.fps=2``, validate."""
    where = str(path) if path else "config"
    data: dict[str, Any] = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{where}: not UTF-8 text (byte {e.start})") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: {_yaml_problem(e)}") from e
        except RecursionError as e:
            raise ConfigError(f"{where}: nested too deeply") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: top level must be a mapping")
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = _unknown_key(first["loc"])
        elif first["type"] == "value_error":  # our own validators' words, without pydantic's "Value error, "
            msg = str(first["ctx"]["error"])
        raise ConfigError(f"{where}: {key}: {msg}{more}") from e
    return _contain_outputs(config, where, given=set(overrides))


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """An unknown key, with the key it most likely meant (``lenght`` -> ``length``) or the keys allowed there."""
    allowed = _keys_at(loc[:-1])
    guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if guess:
        return f"unknown key; did you mean {guess[0]!r}?"
    return f"unknown key (allowed here: {', '.join(allowed)})" if allowed else "unknown key"


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the config model at ``loc`` (list indices and dict keys step into their items)."""
    tp: Any = Config
    for part in loc:
        tp = _optional_inner(tp)
        if get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[str(part)].annotation
        else:
            return []
    tp = _optional_inner(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def field_info(path: str) -> FieldInfo:
    """The schema's field at a dotted config path (``window.fps``, ``sinks.mqtt.host``: through the sections that
    are null until configured); KeyError when there is none. The command line's flags are checked against it."""
    model: Any = Config
    info = None
    for part in path.split("."):
        model = _optional_inner(model)
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            raise KeyError(f"{path}: no such setting")
        info = model.model_fields[part]
        model = info.annotation
    assert info is not None  # a path has at least one part
    return info


def _optional_inner(tp: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _yaml_problem(e: yaml.YAMLError) -> str:
    """YAML's several-line report as one line: where, then what."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"not valid YAML: {where}{what}"


OUTPUT_PATHS = ("sinks.jsonl", "sinks.sqlite.path", "sinks.webhook.spool", "alerts.events_dir")


def _contain_outputs(config: Config, where: str, given: set[str]) -> Config:
    """Put the config's output paths under ``output_dir``; a config file may not write outside it.

    A shared or downloaded config must not be able to write to ``../../.bashrc``, so
    its own ``output_dir`` must stay inside the current folder too. Values given on
    the command line (``given``: ``--out-dir``, ``--sqlite`` ...) are the user's own.
    """
    cwd = Path.cwd().resolve()
    try:
        root = Path(config.output_dir).resolve()
        if "output_dir" not in given and not root.is_relative_to(cwd):
            raise ConfigError(
                f"{where}: output_dir: {config.output_dir!r} is outside the current folder; "
                "a config file may only write below it (give --output-dir on the command line)"
            )
        for dotted in OUTPUT_PATHS:
            _contain(config, dotted, root, where, given)
    except ConfigError:
        raise
    except ValueError as e:  # a NUL byte in a path
        raise ConfigError(f"{where}: output paths: {e}") from e
    return config


def _contain(config: Config, dotted: str, root: Path, where: str, given: set[str]) -> None:
    """One output path: under ``root``, or refused."""
    *parents, leaf = dotted.split(".")
    node: Any = config
    for key in parents:
        node = getattr(node, key)
    value = getattr(node, leaf) if node is not None else None
    if value is None or value == "-" or dotted in given:
        return
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(
            f"{where}: {dotted}: {value!r} is outside the output folder {str(root)!r} (set output_dir to write there)"
        )
    object.__setattr__(node, leaf, str(Path(config.output_dir) / value) if config.output_dir != "." else value)
