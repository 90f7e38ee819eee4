"""The OpenCV text graph of a TensorFlow Object Detection API SSD, rebuilt from the frozen graph's own settings.

OpenCV can run such a graph's convolutional part, but not the API's anchor
generator and post-processing (loops, tensor arrays, non-maximum suppression).
So, as OpenCV's TensorFlow SSD support describes, ``ssd_text_graph`` writes a
text graph: the feature extractor and box predictors of the frozen graph (by
node name; OpenCV reads their weights from the .pb), and a head of OpenCV
layers built from ``SSDSettings``: PriorBox anchors per feature layer, a
sigmoid over the class logits and DetectionOutput. The settings are checked
against the graph itself (anchors and classes per box predictor, the NMS
thresholds of its post-processing) first. Kept apart from ``ssdlite`` (the
weights, the transform, the engines) because it is graph surgery on text,
with no model in it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SSDSettings:
    """The Object Detection API settings the graph was trained with (its ``ssd`` pipeline config)."""

    num_classes: int = 1
    size: int = 300  # fixed_shape_resizer: width = height
    num_layers: int = 6
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    variance: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)  # 1 / (y, x, h, w scales 10, 10, 5, 5) of the box coder
    top_k: int = 100  # max_detections_per_class and max_total_detections

    def scales(self) -> list[float]:
        """Anchor scale per feature layer, evenly from min to max, and 1.0 beyond the last."""
        step = (self.max_scale - self.min_scale) / (self.num_layers - 1)
        return [self.min_scale + step * i for i in range(self.num_layers)] + [1.0]

    def anchors(self, layer: int) -> tuple[list[float], list[float]]:
        """Anchor widths and heights in pixels of the input for one feature layer.

        The lowest layer has three boxes (a small square and the two 2:1 shapes at
        the lowest scale); the others one per aspect ratio and a square between
        this layer's scale and the next.
        """
        s = self.scales()
        if layer == 0:
            ws = [0.1, s[0] * math.sqrt(2.0), s[0] * math.sqrt(0.5)]
            hs = [0.1, s[0] / math.sqrt(2.0), s[0] / math.sqrt(0.5)]
        else:
            ws = [s[layer] * math.sqrt(a) for a in self.aspect_ratios]
            hs = [s[layer] / math.sqrt(a) for a in self.aspect_ratios]
            between = math.sqrt(s[layer] * s[layer + 1])
            ws.append(between)
            hs.append(between)
        return [w * self.size for w in ws], [h * self.size for h in hs]


# ---- the frozen graph as text: just enough of protobuf's text format -------------------------------------


@dataclass
class _Node:
    """One node of a text graph: its own fields, and each attribute as its ``value { ... }`` body."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)


def _parse(text: str) -> list[_Node]:
    """Nodes of a GraphDef as protobuf's text printer writes it (one field per line, blocks closed alone)."""
    nodes: list[_Node] = []
    node: _Node | None = None
    key, depth = "", 0
    body: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if node is None:
            if s == "node {":
                node, depth = _Node("", ""), 1
            continue
        if depth == 1:
            if s == "}":
                nodes.append(node)
                node, depth = None, 0
            elif s == "attr {":
                key, body, depth = "", [], 2
            else:
                name, _, value = s.partition(": ")
                value = value.strip('"')
                if name == "name":
                    node.name = value
                elif name == "op":
                    node.op = value
                elif name == "input":
                    node.inputs.append(value)
            continue
        if s.endswith("{"):
            depth += 1
        elif s == "}":
            depth -= 1
        if depth == 1:  # the attr block closed
            node.attrs[key] = "\n".join(body[1:-1])  # the lines inside "value { ... }"
        elif depth == 2 and s.startswith("key:"):
            key = s.partition(": ")[2].strip('"')
        else:
            body.append(s)
    return nodes


def _tensor(values: list[float] | list[int]) -> str:
    """An attribute body holding a 1-d tensor."""
    floats = any(isinstance(v, float) for v in values)
    kind, dtype = ("float_val", "DT_FLOAT") if floats else ("int_val", "DT_INT32")
    items = " ".join(f"{kind}: {v!r}" for v in values)
    return f"tensor {{ dtype: {dtype} tensor_shape {{ dim {{ size: {len(values)} }} }} {items} }}"


def _scalar(value: bool | int | float | str) -> str:
    """An attribute body holding one value."""
    if isinstance(value, bool):
        return f"b: {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"i: {value}"
    if isinstance(value, float):
        return f"f: {value!r}"
    return f's: "{value}"'


def _write(nodes: list[_Node]) -> str:
    out = []
    for n in nodes:
        out.append(f'node {{\n  name: "{n.name}"\n  op: "{n.op}"')
        out += [f'  input: "{i}"' for i in n.inputs]
        out += [f'  attr {{\n    key: "{k}"\n    value {{\n      {v}\n    }}\n  }}' for k, v in n.attrs.items()]
        out.append("}")
    return "\n".join(out) + "\n"


def _const_shape(node: _Node) -> list[int]:
    return [int(d) for d in re.findall(r"size: (-?\d+)", node.attrs.get("value", ""))]


def _const_float(node: _Node) -> float:
    found = re.search(r"float_val: ([-\d.e+]+)", node.attrs.get("value", ""))
    if found is None:
        raise ValueError(f"{node.name}: not a float constant")
    return float(found.group(1))


# Ops of the feature extractor and box predictors; everything else (and Const: OpenCV reads weights from the .pb) goes.
_KEEP_OPS = {
    "Placeholder",
    "Conv2D",
    "DepthwiseConv2dNative",
    "BiasAdd",
    "FusedBatchNorm",
    "FusedBatchNormV3",
    "Relu6",
    "Add",
    "AddV2",
    "Mul",
    "Sub",
    "Identity",
}
# The Object Detection API's own pre- and post-processing: OpenCV layers (and our transform) replace them.
_DROP_PREFIXES = ("Preprocessor/map", "MultipleGridAnchorGenerator/", "Postprocessor/", "Concatenate/")
_NMS = "Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/non_max_suppression/"
_INPUT = "image_tensor"


def ssd_text_graph(graph_text: str, settings: SSDSettings) -> str:
    """The OpenCV text graph for an Object Detection API SSD, from the frozen graph as text.

    Raises ValueError when the graph does not have the layers, anchors or
    classes the settings say (another model in the same file name).
    """
    nodes = _parse(graph_text)
    by_name = {n.name: n for n in nodes}
    c = settings.num_classes + 1  # and the background
    for i in range(settings.num_layers):
        anchors = len(settings.anchors(i)[0])
        for part, per_anchor in (("ClassPredictor", c), ("BoxEncodingPredictor", 4)):
            weights = by_name.get(f"BoxPredictor_{i}/{part}/weights")
            shape = _const_shape(weights) if weights else []
            if not shape or shape[-1] != anchors * per_anchor:
                raise ValueError(
                    f"BoxPredictor_{i}/{part}: expected {anchors} anchors x {per_anchor} outputs, "
                    f"graph has {shape[-1] if shape else 'no such layer'}"
                )
    iou, score = (_const_float(by_name[_NMS + k]) for k in ("iou_threshold", "score_threshold"))

    # Identity nodes are read-throughs: point their consumers at what they read.
    alias = {n.name: n.inputs[0] for n in nodes if n.op == "Identity"}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    kept = [n for n in nodes if n.op in _KEEP_OPS and n.op != "Identity" and not n.name.startswith(_DROP_PREFIXES)]
    dropped = {n.name for n in nodes if n.op != "Const"} - {n.name for n in kept}
    for n in kept:
        n.inputs = [i for i in map(resolve, n.inputs) if i not in dropped]
        for unused in ("T", "_class", "Tidx", "use_cudnn_on_gpu", "is_training"):
            n.attrs.pop(unused, None)
    # The graph scales pixels itself (x * 2/255 - 1): feed its scaling from the input instead of the resize loop.
    scale = by_name["Preprocessor/mul"]
    scale.inputs = [_INPUT, *scale.inputs]
    for i in range(settings.num_layers):  # TensorFlow's boxes are (y, x, h, w); OpenCV's DetectionOutput wants x first
        by_name[f"BoxPredictor_{i}/BoxEncodingPredictor/Conv2D"].attrs["loc_pred_transposed"] = _scalar(True)

    head: list[_Node] = [_Node("concat/axis_flatten", "Const", attrs={"value": _tensor([-1])})]
    for part in ("ClassPredictor", "BoxEncodingPredictor"):
        flats = [
            _Node(f"BoxPredictor_{i}/{part}/BiasAdd/Flatten", "Flatten", [f"BoxPredictor_{i}/{part}/BiasAdd"])
            for i in range(settings.num_layers)
        ]
        head += [*flats, _Node(f"{part}/concat", "ConcatV2", [f.name for f in flats] + ["concat/axis_flatten"])]
    priors = []
    for i in range(settings.num_layers):
        widths, heights = settings.anchors(i)
        priors.append(
            _Node(
                f"PriorBox_{i}",
                "PriorBox",
                [f"BoxPredictor_{i}/BoxEncodingPredictor/BiasAdd", _INPUT],
                {
                    "flip": _scalar(False),
                    "clip": _scalar(False),
                    "width": _tensor(widths),
                    "height": _tensor(heights),
                    "variance": _tensor(list(settings.variance)),
                },
            )
        )
    head += [*priors, _Node("PriorBox/concat", "ConcatV2", [p.name for p in priors] + ["concat/axis_flatten"])]
    head += [
        _Node("ClassPredictor/concat3d/shape", "Const", attrs={"value": _tensor([0, -1, c])}),
        _Node("ClassPredictor/concat3d", "Reshape", ["ClassPredictor/concat", "ClassPredictor/concat3d/shape"]),
        _Node("ClassPredictor/concat/sigmoid", "Sigmoid", ["ClassPredictor/concat3d"]),
        _Node("ClassPredictor/concat/sigmoid/Flatten", "Flatten", ["ClassPredictor/concat/sigmoid"]),
        _Node(
            "detection_out",
            "DetectionOutput",
            ["BoxEncodingPredictor/concat", "ClassPredictor/concat/sigmoid/Flatten", "PriorBox/concat"],
            {
                "num_classes": _scalar(c),
                "share_location": _scalar(True),
                "background_label_id": _scalar(0),
                "nms_threshold": _scalar(iou),
                "confidence_threshold": _scalar(score),
                "top_k": _scalar(settings.top_k),
                "keep_top_k": _scalar(settings.top_k),
                "code_type": _scalar("CENTER_SIZE"),
            },
        ),
    ]
    return _write(_connected([*kept, *head], "detection_out"))


def _connected(nodes: list[_Node], output: str) -> list[_Node]:
    """The nodes ``output`` depends on (Const inputs are looked up in the .pb, not here), in their order."""
    by_name = {n.name: n for n in nodes}
    needed, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name in needed or name not in by_name:
            continue
        needed.add(name)
        todo += by_name[name].inputs
    return [n for n in nodes if n.name in needed]
