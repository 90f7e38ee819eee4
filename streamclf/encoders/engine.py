"""Inference engines for the encoders: the torch module itself, ONNX Runtime or OpenVINO.

On the 2-core CPUs here an engine runs the same fp32 network about 2-3x faster
than eager torch with the same top-1 labels (benchmarks/encoders.py, docs/engines.md). The torch
module stays the reference: the engine's graph is exported from it once, cached
under the user cache keyed by weights id + engine + engine version + input shape,
and before it is used it must agree with the module on a batch (every top-1
identical, outputs within a tolerance). A cached file that does not load or
does not agree is rebuilt, never trusted; a fresh export that still disagrees
is dropped for the next engine (torch last) with one warning.
About 400 lines on purpose: export, cache key, agreement check and fallback are
one contract per engine; apart, a cache could be trusted without the check that
guards it.

``Runner`` is a drop-in for ``module.embed``: tensor batch in, (embeddings,
logits) out, so the worker's batching across sources is unchanged (the graphs
have a dynamic batch axis). Shapes other than the one the graph was made for
(a short last window) go through the module.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from .weights import cache_dir

log = logging.getLogger("streamclf")

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
PREFERENCE = ("openvino", "onnxruntime")
"""``auto``'s order on a CPU: benchmarks/encoders.py (load 2-4, 3 rounds) had OpenVINO ahead for both
encoders (EfficientNet-Lite0 2.51x eager fp32 vs ONNX Runtime 1.72x; YAMNet 2.27x vs 1.89x), with the
same labels and a cached graph ready as fast. torch is always the last resort."""

_PACKAGE = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
OPSET = 17
RTOL = 1e-3
"""Largest output difference allowed, relative to the output's largest magnitude (fp32 reorderings are ~1e-6)."""


class EngineUnavailable(ValueError):
    """An engine was asked for by name and cannot run here; the message says what to do."""


class EngineFailure(RuntimeError):
    """An engine could not build, load or reproduce the module (the runner moves on to the next one)."""


def installed(engine: str) -> bool:
    return engine == "torch" or importlib.util.find_spec(_PACKAGE[engine]) is not None


def version(engine: str) -> str:
    return torch.__version__ if engine == "torch" else importlib.metadata.version(_PACKAGE[engine])


def check_engine(engine: str, device: torch.device | None = None) -> str:
    """``engine`` if it can run on ``device``, else one clear line (unknown, not installed, not on this device)."""
    if engine not in ENGINES:
        raise EngineUnavailable(f"engine {engine!r}: unknown; choose from {', '.join(ENGINES)}")
    if engine in ("auto", "torch"):
        return engine
    if not installed(engine):
        raise EngineUnavailable(
            f"engine {engine}: the Python package '{_PACKAGE[engine]}' is not installed "
            f"(run `pip install {_PACKAGE[engine]}`, or use --engine auto)"
        )
    if device is not None and device.type != "cpu":
        if engine == "openvino":
            raise EngineUnavailable(
                f"engine openvino runs on the CPU only, not on {device}; use --engine torch or onnxruntime there"
            )
        if "CUDAExecutionProvider" not in _ort_providers():
            raise EngineUnavailable(
                f"engine onnxruntime: this onnxruntime has no CUDA provider for {device} "
                "(install onnxruntime-gpu, or use --engine torch)"
            )
    return engine


def candidates(engine: str, device: torch.device) -> list[str]:
    """Engines to try in order: the one asked for, or ``auto``'s installed ones; torch always last.

    ``auto`` on a GPU is torch: the module already runs there, and one code path serves both.
    """
    check_engine(engine, device)
    if engine == "auto":
        return [e for e in PREFERENCE if installed(e)] + ["torch"] if device.type == "cpu" else ["torch"]
    return [engine] if engine == "torch" else [engine, "torch"]


def worker_threads() -> int:
    """Cores this worker owns: what torch was given (the project sets it from the config)."""
    return torch.get_num_threads()


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


class Session(Protocol):
    """A loaded engine graph: float32 batch in, (embeddings, logits) out."""

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class _Embed(torch.nn.Module):
    """The module's ``embed`` as ``forward``: what the exporters trace."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return embed(self.module, x)


def embedder(module: torch.nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``module.embed``: every encoder module has it (embeddings, logits); ``nn.Module``'s type cannot say so."""
    return getattr(module, "embed")  # noqa: B009


def embed(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``module.embed(x)``."""
    return embedder(module)(x)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """The module's ``embed`` as ONNX with a dynamic batch axis (TorchScript exporter: no onnxscript needed)."""
    import warnings

    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: shapes are fixed per graph
        torch.onnx.export(
            _Embed(module).eval(),
            (example.float().contiguous(),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["embedding", "logits"],
            opset_version=OPSET,
            dynamic_axes={"x": batch, "embedding": batch, "logits": batch},
        )


def _ort_session(path: Path, device: torch.device, threads: int) -> Session:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep: cores are shared
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if device.type == "cuda":
        providers: list = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), opts, providers=providers)

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb, logits = sess.run(None, {"x": x})
        return emb, logits

    return run


def write_ir(source: Path, path: Path, edit: Callable[[Any], Any] | None = None) -> None:
    """Convert a model file (ONNX, TensorFlow frozen graph) to OpenVINO IR at ``path`` (+ .bin), weights in fp32;
    ``edit`` changes the converted ``openvino.Model`` first (e.g. keeps part of it).

    Written beside and moved into place, the .xml last: a reader never sees a half-written pair.
    """
    import openvino as ov

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        xml = Path(tmp) / "model.xml"
        model = ov.convert_model(str(source))
        if edit is not None:
            model = edit(model)
        ov.save_model(model, str(xml), compress_to_fp16=False)  # default: fp16 weights
        xml.with_suffix(".bin").replace(path.with_suffix(".bin"))
        xml.replace(path)


STATIC_BATCHES = (8, 4, 2, 1)
"""OpenVINO runs an image network compiled for a fixed batch faster than the same graph with a dynamic
batch axis, with the same outputs (same IR, 2 threads, same run: EfficientNet-Lite0 129 -> 140-161
images/s, the SSDLite network 80 -> 92-109 frames/s; docs/engines.md). A batch of images is cut into
pieces of these sizes (13 = 8 + 4 + 1), each size compiled when first needed."""
STATIC_MIN_ITEM = 100_000
"""Input elements per item below which the dynamic graph is kept: each piece is a call, and for small
items the call's fixed cost eats the gain (YAMNet's 96x64 patches: the same 1210 patches/s at 24 a
batch, 680 against 890 at 3 when cut into 2 + 1)."""


def ov_compile(path: Path, threads: int, batch: int | None = None) -> Any:
    """An OpenVINO IR compiled for the CPU in fp32 with the worker's threads, pinned to no core; ``batch``
    fixes the first input's batch axis."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    model = core.read_model(str(path))
    if batch is not None:
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch
        model.reshape({model.inputs[0].any_name: shape})
    config = {
        props.inference_num_threads: threads,
        props.num_streams: 1,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        hints.inference_precision: ov.Type.f32,  # bf16 by default on AMX CPUs: changes labels
        hints.enable_cpu_pinning: False,
    }  # the cores are shared with the decoder threads
    return core.compile_model(model, "CPU", config)


class OVPieces:
    """An OpenVINO IR run in pieces of ``STATIC_BATCHES`` sizes, one compiled graph per size (items of fewer
    than ``STATIC_MIN_ITEM`` elements: whole, through the graph with the dynamic batch axis)."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path, self.threads = path, threads
        self._compiled: dict[int | None, tuple[Any, Any]] = {}  # batch (None: dynamic) -> (model, infer request)

    def __call__(self, x: np.ndarray, outputs: tuple[int, ...]) -> list[np.ndarray]:
        """The ``outputs`` (by index; each batched along its first axis) for the batch ``x``."""
        parts = []
        start = 0
        while start < len(x):
            size = next(b for b in STATIC_BATCHES if b <= len(x) - start) if x[0].size >= STATIC_MIN_ITEM else None
            if size not in self._compiled:
                compiled = ov_compile(self.path, self.threads, size)
                self._compiled[size] = (compiled, compiled.create_infer_request())
            compiled, request = self._compiled[size]
            out = request.infer({0: x[start : start + (size or len(x))]})
            parts.append([out[compiled.output(i)].copy() for i in outputs])
            start += size or len(x)
        return [np.concatenate(p) for p in zip(*parts, strict=True)] if parts else []


def _ov_session(path: Path, device: torch.device, threads: int) -> Session:
    pieces = OVPieces(path, threads)

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb, logits = pieces(x, (0, 1))
        return emb, logits

    return run


def cached_path(weights_id: str, engine: str, shape: tuple[int, ...], source: str | None = None) -> Path:
    """The engine's graph for these weights, this engine version, this input shape and where it came from
    (``source``; default: this torch's exporter)."""
    folder = cache_dir() / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    dims = "x".join(map(str, shape))
    suffix = ".onnx" if engine == "onnxruntime" else ".xml"
    source = source or f"torch-{torch.__version__}"
    return folder / f"{weights_id}.{engine}-{version(engine)}.{source}.{dims}{suffix}"


def _build(module: torch.nn.Module, example: torch.Tensor, engine: str, path: Path) -> None:
    """Export to ``path`` atomically (several processes may build at once)."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(module, example, onnx_path)
        if engine == "onnxruntime":
            onnx_path.replace(path)
        else:
            write_ir(onnx_path, path)


def _remove(path: Path) -> None:
    for p in (path, path.with_suffix(".bin")):
        p.unlink(missing_ok=True)


def disagreement(ref: tuple[torch.Tensor, torch.Tensor], got: tuple[np.ndarray, np.ndarray]) -> str | None:
    """Why the engine's outputs are not the module's (None when they agree)."""
    for name, tensor, g in zip(("embedding", "logits"), ref, got, strict=True):
        r = tensor.float().numpy()
        if g.shape != r.shape:
            return f"{name} shape {g.shape} is not {r.shape}"
        worst = float(np.abs(g - r).max()) if r.size else 0.0
        if not np.isfinite(worst) or worst > RTOL * max(1.0, float(np.abs(r).max())):
            return f"{name} differs by up to {worst:.3g}"
    if (ref[1].argmax(-1).numpy() != got[1].argmax(-1)).any():
        return "a top-1 class differs"
    return None


_OPEN: dict[str, Callable[[Path, torch.device, int], Session]] = {"onnxruntime": _ort_session, "openvino": _ov_session}


def load_checked(
    module: torch.nn.Module, weights_id: str, engine: str, example: torch.Tensor, device: torch.device, threads: int
) -> Session:
    """The engine's session for ``module``, from the cache or freshly exported, checked against the module."""
    x = example.float().contiguous().numpy()
    with torch.inference_mode():
        ref = embed(module, example.to(device))
    ref = (ref[0].cpu(), ref[1].cpu())

    def open_checked(path: Path) -> tuple[Session, str | None]:
        session = _OPEN[engine](path, device, threads)
        return session, disagreement(ref, session(x))

    return cached_session(
        cached_path(weights_id, engine, tuple(example.shape[1:])),
        lambda path: _build(module, example, engine, path),
        open_checked,
        f"{weights_id} ({engine})",
    )


S = TypeVar("S")


def cached_session(
    path: Path, build: Callable[[Path], None], open_checked: Callable[[Path], tuple[S, str | None]], what: str
) -> S:
    """Open the engine file at ``path`` (building it when absent) and check it against the reference.

    ``open_checked`` gives the session and why it disagrees (None: it agrees). A
    cached file that fails to load or to agree is rebuilt once, never trusted; a
    fresh build that fails raises ``EngineFailure``.
    """
    fresh = False
    while True:
        if not path.exists():
            try:
                build(path)
            except Exception as e:
                raise EngineFailure(f"cannot export {what} ({_first_line(e)})") from e
            fresh = True
        try:
            session, why = open_checked(path)
            if why is None:
                return session
        except Exception as e:
            why = f"cannot load {path.name} ({_first_line(e)})"
        if fresh:
            raise EngineFailure(f"{what} does not reproduce the reference: {why}")
        log.info("%s: cached graph %s rejected (%s); rebuilding it", what, path.name, why)
        _remove(path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


class Runner:
    """``module.embed`` through the first engine of ``candidates`` that builds and agrees.

    The engine is chosen on the first batch (or ``prepare``): its shape, less the
    batch axis, is the graph's. ``engine`` names the one in use, once chosen.
    Without ``threads`` the engine follows the worker's torch thread count at each
    call (``label`` sets it around inference): one session per count, opened from
    the checked file.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        weights_id: str,
        engine: str = "auto",
        device: torch.device | None = None,
        threads: int | None = None,
    ) -> None:
        device = device or torch.device("cpu")
        self.module, self.weights_id, self.device = module, weights_id, device
        self.order = candidates(engine, device)
        self.threads = threads
        self.engine: str | None = None
        self.shape: tuple[int, ...] | None = None
        self._sessions: dict[int, Session] = {}

    def prepare(self, example: torch.Tensor) -> str:
        """Choose the engine for inputs shaped like ``example``; warns once when one asked for is dropped."""
        self.shape = tuple(example.shape[1:])
        threads = self.threads or worker_threads()
        dropped = []
        for engine in self.order:
            if engine == "torch":
                break
            try:
                self._sessions = {
                    threads: load_checked(self.module, self.weights_id, engine, example.cpu(), self.device, threads)
                }
            except EngineFailure as e:
                dropped.append(str(e))
                continue
            self.engine = engine
            return engine
        if dropped:
            log.warning("%s: running in torch: %s", self.weights_id, "; ".join(dropped))
        self.engine = "torch"
        return "torch"

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.engine is None:
            self.prepare(x[:4])
        if not self._sessions or tuple(x.shape[1:]) != self.shape or not len(x):
            return embed(self.module, x)
        threads = self.threads or worker_threads()
        session = self._sessions.get(threads)
        if session is None:  # the file in the cache is the one checked in prepare
            assert self.engine is not None and self.shape is not None
            path = cached_path(self.weights_id, self.engine, self.shape)
            session = self._sessions[threads] = _OPEN[self.engine](path, self.device, threads)
        emb, logits = session(np.ascontiguousarray(x.float().cpu().numpy()))
        return torch.from_numpy(emb), torch.from_numpy(logits)

    def describe(self) -> str:
        if self.engine in (None, "torch"):
            return "torch"
        return f"{self.engine} {version(self.engine)}"


def cpu_has_int8_dot() -> bool:
    """VNNI or AMX: the instructions int8 inference needs to be both fast and exact enough (Linux flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


__all__ = [
    "ENGINES",
    "PREFERENCE",
    "EngineFailure",
    "EngineUnavailable",
    "Runner",
    "cached_path",
    "candidates",
    "check_engine",
    "cpu_has_int8_dot",
    "disagreement",
    "export_onnx",
    "installed",
    "load_checked",
    "version",
]
