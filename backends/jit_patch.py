"""Retarget a loaded TorchScript CLIP to a device (and, on the CPU, to float32) by editing its graphs.

A traced graph keeps what was true when it was traced as constants: the device (`torch.device("cuda:0")`
for OpenAI's archives, traced on a GPU) and the half-precision casts (`torch.to(image, ..., 5)`, where 5 is
float16's ScalarType code). Moving the weights with `map_location` does not touch them, so OpenAI's
`clip.load(jit=True)` rewrites them in place. This module does the same job:

- every `Device` constant that is not the target device becomes the target device (OpenAI rewrites only
  `cuda*` constants; a CLIP graph has no reason to keep a tensor on another device than its weights);
- with `float32=True` (the CPU, as in the reference) every `dtype` argument that is the constant float16
  becomes float32, in any op (`aten::to` at either of its dtype positions, and factories such as
  `aten::zeros`), after which the caller converts the weights with `module.float()`.

Unlike the reference, which overwrites the shared constant node (so an integer 5 used as a size would
become 6), a dtype argument gets a new constant of its own; only the dtype use changes. The graphs edited
are those of every method of every submodule (forward, forward1, encode_image, encode_text, ...), with
calls to free functions inlined first so that their constants are reached too. Patch right after
`torch.jit.load`: a graph already run has been compiled into an execution plan that edits do not reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["FLOAT16", "FLOAT32", "PatchReport", "graphs_of", "patch_module"]

# torch's ScalarType codes, as they appear in TorchScript graphs.
FLOAT16 = 5
FLOAT32 = 6


@dataclass
class PatchReport:
    """How many constants were rewritten, per kind, over all graphs."""

    graphs: int = 0
    devices: int = 0
    dtypes: int = 0


def graphs_of(module: torch.jit.ScriptModule) -> Iterator[tuple[str, torch._C.Graph]]:
    """(qualified method name, graph) of every method of `module` and its submodules."""
    for prefix, submodule in module.named_modules():
        scripted = getattr(submodule, "_c", None)
        if scripted is None:
            continue
        for method in scripted._method_names():
            yield f"{prefix}.{method}" if prefix else method, scripted._get_method(method).graph


def _nodes(block: torch._C.Block) -> Iterator[torch._C.Node]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def _constant(value: torch._C.Value, kind: str) -> torch._C.Node | None:
    """The prim::Constant node producing `value` if it holds an attribute of `kind` ('i', 's', ...)."""
    node = value.node()
    if node.kind() != "prim::Constant" or not node.hasAttribute("value") or node.kindOf("value") != kind:
        return None
    return node


_SCHEMAS: dict[str, list[str]] = {}


def _argument_names(node: torch._C.Node) -> list[str]:
    text = node.schema()
    if text not in _SCHEMAS:
        try:
            _SCHEMAS[text] = [argument.name for argument in torch._C.parse_schema(text).arguments]
        except RuntimeError:  # "(no schema)": constants, lists, calls
            _SCHEMAS[text] = []
    return _SCHEMAS[text]


def patch_graph(graph: torch._C.Graph, device: torch.device, float32: bool, report: PatchReport) -> None:
    if any(node.kind() == "prim::CallFunction" for node in _nodes(graph.block())):
        torch._C._jit_pass_inline(graph)
    target = str(device)
    for node in list(_nodes(graph.block())):
        if node.kind() == "prim::Constant":
            if node.output().type().kind() == "DeviceObjType" and node.hasAttribute("value") \
                    and node.s("value") != target:
                node.s_("value", target)
                report.devices += 1
            continue
        if not float32:
            continue
        for index, name in enumerate(_argument_names(node)):
            if name != "dtype" or index >= node.inputsSize():
                continue
            constant = _constant(node.inputsAt(index), "i")
            if constant is not None and constant.i("value") == FLOAT16:
                with graph.insert_point_guard(node):
                    node.replaceInput(index, graph.insertConstant(FLOAT32))
                report.dtypes += 1
    report.graphs += 1


def patch_module(module: torch.jit.ScriptModule, device: str | torch.device, float32: bool) -> PatchReport:
    """Rewrite the device (and, with `float32`, the float16 casts) in every graph of `module`, in place.

    With `float32`, convert the weights too (`module.float()`) once this returns.
    """
    device = torch.device(device)
    report = PatchReport()
    for _, graph in graphs_of(module):
        patch_graph(graph, device, float32, report)
    return report
