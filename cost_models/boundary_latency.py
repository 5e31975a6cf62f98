"""Latency of precision boundaries: the QuantizeLinear an int8 layer runs on a float tensor it
reads, the DequantizeLinear a float layer runs on an int8 layer's codes (issue #22).

No layer's own latency holds them: each option's latency is measured (the host profile builds
the whole model at that one option: cost_models.profiler) or modelled as it runs among layers
of its own precision, where codes flow from int8 layer to int8 layer. A mixed plan adds one
boundary node per tensor crossing between the two, a cost of *two* layers' choices at once:
a pair term (planner.Problem.latency_pairs), the latency twin of the boundary copies' RAM
(cost_models.ram_terms.boundary_terms).

Each boundary costs the profile's per-op overhead plus the bytes it moves (reads 4-byte floats
and writes 1-byte codes, or the reverse) at the profile's memory bandwidth: the formula every
elementwise op charged to a layer gets (cost_models.analytical.layer_latency_ms). Derived from
the profile's constants, not measured per boundary.
"""

from __future__ import annotations

from cost_models.graph import LayerGraph
from cost_models.ram_terms import _grouped, _int8_act, _layer_reads
from cost_models.table import CostTable

# bytes a boundary node moves per element: a 4-byte float on one side, a 1-byte code on the
# other
BOUNDARY_BYTES_PER_ELEMENT = 4 + 1

Boundary = tuple[str, tuple[str, ...], str, tuple[str, ...], float]


def boundary_ms(table: CostTable, elements: float) -> float:
    """One boundary node over `elements` values."""
    return table.boundary_overhead_ms + \
        table.boundary_ms_per_byte * BOUNDARY_BYTES_PER_ELEMENT * elements


def boundary_latency_terms(graph: LayerGraph, table: CostTable) -> list[Boundary]:
    """(producer, its options, reader, its options, ms) for every planned tensor an int8 layer
    and a float layer share: the producer's int8 codes read by a float option
    (DequantizeLinear), or its float tensor read by an int8 option (QuantizeLinear). A
    producer's options are grouped by how many elements they write (channel pruning narrows
    the tensor). Empty when the profile does not cost boundaries."""
    if not (table.boundary_overhead_ms or table.boundary_ms_per_byte):
        return []
    seen: set[tuple[str, str]] = set()
    out: list[Boundary] = []
    for _, reader, producer, tensor in _layer_reads(graph, table):
        if (producer, reader) in seen:  # a tensor read at two steps is converted once
            continue
        seen.add((producer, reader))
        ints = tuple(c.option for c in table.options[reader] if _int8_act(c))
        floats = tuple(c.option for c in table.options[reader] if not _int8_act(c))
        sized = []
        for c in table.options[producer]:
            codes = _int8_act(c) and not c.float_output
            elements = tensor.numel * c.act_bytes / (1.0 if codes else 4.0)
            sized.append(((elements, codes), c.option))
        for (elements, codes), options in _grouped(sized).items():
            readers = floats if codes else ints
            if elements and readers:
                out.append((producer, options, reader, readers, boundary_ms(table, elements)))
    return out


PROVENANCE = ("precision boundaries (a QuantizeLinear / DequantizeLinear between an int8 layer "
              "and a float one, a pair term of both choices): the profile's per-op overhead + "
              "5 bytes per element at its memory bandwidth (derived from the profile's "
              "constants, not measured per boundary; cost_models.boundary_latency)")
