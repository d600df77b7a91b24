"""Networks: an E(3)-equivariant message-passing net (e3nn) and an invariant one.

Both work on dense residue graphs (:mod:`backmap_plugin.model.graph`).
:class:`EquivariantNet` takes scalar and vector node features, passes
messages with tensor products of neighbour features and spherical harmonics
of the edge vectors, and reads out scalars only (``0e``), which are exactly
invariant to rotations, translations and reflections of the input; without
gradients (generation) each product is evaluated folded with the radial
MLP that weights it (:func:`_folded_messages`).
:class:`InvariantNet` passes messages between invariant node and edge
features (distances and neighbour positions in local frames).
"""

from __future__ import annotations

import contextlib
import sys
import types
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from backmap_plugin.model.graph import N_RBF, SEQ_CLASSES, Neighbours, gather_neighbours


@contextlib.contextmanager
def _compiler_disable_as_identity():
    """Let ``torch.compiler.disable`` return its function unchanged for a while.

    e3nn decorates a function with it when ``e3nn.o3`` is imported, and the
    real decorator imports ``torch._dynamo``: about 1.5 s, most of the
    ``backmap`` command's start-up. The decorator only matters under
    ``torch.compile``, which this package never uses, so the identity
    changes nothing in eager execution.
    """
    original = torch.compiler.disable

    def identity(fn=None, *args, **kwargs):
        return fn if fn is not None else (lambda f: f)

    torch.compiler.disable = identity
    try:
        yield
    finally:
        torch.compiler.disable = original


class _DeferredSympyName:
    """A name e3nn imports from sympy, resolved from the real sympy at first use.

    Called, or used in arithmetic (e3nn multiplies ``pi``), it imports sympy
    and acts as the real object.
    """

    def __init__(self, name: str):
        self.name = name

    def resolve(self):
        import sympy

        return getattr(sympy, self.name)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __mul__(self, other):
        return self.resolve() * other

    def __rmul__(self, other):
        return other * self.resolve()

    def __truediv__(self, other):
        return self.resolve() / other

    def __rtruediv__(self, other):
        return other / self.resolve()


@contextlib.contextmanager
def _sympy_deferred():
    """Let e3nn load without importing sympy (0.4 s of every start-up).

    ``e3nn.o3`` imports a few sympy names at load time for its Legendre
    polynomials, which this package never builds. While e3nn loads, a stand-in
    ``sympy`` module hands out :class:`_DeferredSympyName` objects; the
    stand-in is removed afterwards, so any later ``import sympy`` gets the real
    package, and e3nn's own sympy functions still work (tested).
    """
    if "sympy" in sys.modules:
        yield
        return
    def deferred(name):
        if name.startswith("__"):  # (import machinery asks for __path__, __spec__ ...)
            raise AttributeError(name)
        return _DeferredSympyName(name)

    stand_in = types.ModuleType("sympy")
    stand_in.__getattr__ = deferred
    sys.modules["sympy"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("sympy") is stand_in:
            del sys.modules["sympy"]


with _compiler_disable_as_identity(), _sympy_deferred():
    from e3nn import o3
    from e3nn.nn import Gate


def mlp(sizes: list[int], last_activation: bool = False) -> nn.Sequential:
    """A SiLU multilayer perceptron."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def _mean_over_edges(messages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """messages (G, L, K, D), mask (G, L, K) -> (G, L, D) mean over real edges."""
    weight = mask.to(messages.dtype)[..., None]
    return (messages * weight).sum(2) / weight.sum(2).clamp(min=1.0)


def _drop_unused_steps(product: o3.TensorProduct) -> None:
    """Remove the steps whose results e3nn's generated tensor-product code never uses.

    e3nn (0.5, 0.6) generates the product as a torch.fx graph that computes
    a few outer products and then discards them; dead-code elimination on
    that graph leaves the result unchanged (tested) and saves about 15 % of
    the product's time. Products without such a graph are left as they are.
    """
    for name in ("_compiled_main_left_right", "_compiled_main_right"):
        module = getattr(product, name, None)
        if isinstance(module, torch.fx.GraphModule) and module.graph.eliminate_dead_code():
            module.recompile()


@dataclass(frozen=True)
class _Path:
    """One weighted path of an e3nn ``uvw`` tensor product whose second input has multiplicity 1.

    ``out[w, k] += path_weight * sum_{u, i, j} weight[u, w] * x1[u, i] * x2[j] * w3j[i, j, k]``,
    with ``weight[u, w]`` at ``weights`` of the product's flat weight vector.
    """

    in1: slice
    in2: slice
    out: slice
    mul_in: int
    mul_out: int
    dim_in: int
    weights: slice
    path_weight: float
    w3j: torch.Tensor


def _product_paths(product: o3.TensorProduct) -> list[_Path]:
    """The paths of ``product`` in the order of its weights."""
    slices = product.irreps_in1.slices(), product.irreps_in2.slices(), product.irreps_out.slices()
    paths, start = [], 0
    for ins in product.instructions:
        mul_in, mul2, mul_out = ins.path_shape
        if ins.connection_mode != "uvw" or mul2 != 1:
            raise ValueError("only uvw paths with a second input of multiplicity 1 fold")
        ir1, ir2, ir_out = (irreps[i].ir for irreps, i in zip(
            (product.irreps_in1, product.irreps_in2, product.irreps_out), (ins.i_in1, ins.i_in2, ins.i_out)))
        paths.append(_Path(slices[0][ins.i_in1], slices[1][ins.i_in2], slices[2][ins.i_out], mul_in, mul_out,
                           ir1.dim, slice(start, start + mul_in * mul_out), ins.path_weight,
                           o3.wigner_3j(ir1.l, ir2.l, ir_out.l)))
        start += mul_in * mul_out
    return paths


def _edge_matrix(index: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR structure (row starts, columns) of an (edges, nodes x width) matrix: edge e reads its sender's rows.

    ``index`` (G, L, K) gives the senders of the edges of every graph; the
    edge (g, l, k) is row ``(g L + l) K + k`` and has ``width`` entries, at
    columns ``(g L + index[g, l, k]) width + h``.
    """
    g, length, _ = index.shape
    sender = (index + length * torch.arange(g, device=index.device)[:, None, None]).reshape(-1)
    rows = torch.arange(sender.numel() + 1, device=index.device) * width
    columns = (sender[:, None] * width + torch.arange(width, device=index.device)).reshape(-1)
    small = sender.numel() * width < 2**31  # (32-bit indices spare the sparse product a conversion per call)
    return (rows.int(), columns.int()) if small else (rows, columns)


def _folded_messages(paths: list[_Path], radial_out: nn.Linear, h: torch.Tensor, edge_hidden: torch.Tensor,
                     edge_weight: torch.Tensor, sh: torch.Tensor, matrix: tuple[torch.Tensor, torch.Tensor],
                     n_out: int) -> torch.Tensor:
    """Weighted sum over each node's edges of a tensor product whose weights come from a linear layer.

    The product of a sender's features x with the edge's spherical
    harmonics Y, weighted by ``W r + b`` (``radial_out`` of the edge's
    hidden radial features r), is linear in r: it equals
    ``sum_h r'_h P(x, Y; W'_h)`` with ``r' = (r, 1)`` and ``W' = (W, b)``.
    The contraction of x with W' is a table per node (node, h, channel); a
    sparse (edge, node x h) matrix of the edges' r' applies it to every
    edge, and the harmonics and 3j symbols come last. The (edges x weights)
    array the plain product needs is never formed: three times faster on a
    CPU, the same function (float rounding aside; tested). For inference
    only: the backward pass through the sparse matrix is slow.

    Parameters
    ----------
    paths : list of _Path
        The product's paths (:func:`_product_paths`).
    radial_out : torch.nn.Linear
        The radial MLP's last layer (the product's weights).
    h : torch.Tensor
        (G, L, D) node features (the product's first input).
    edge_hidden : torch.Tensor
        (G, L, K, H) hidden radial features of the edges (the last layer's input).
    edge_weight : torch.Tensor
        (G, L, K) weight of each edge in its node's sum (0 for padding edges).
    sh : torch.Tensor
        (G, L, K, D_sh) spherical harmonics of the edges (the second input).
    matrix : tuple of torch.Tensor
        :func:`_edge_matrix` of the edges with width H + 1.
    n_out : int
        Size of the product's output.

    Returns
    -------
    torch.Tensor
        (G, L, n_out).
    """
    g, length, k, hidden = edge_hidden.shape
    n, width = g * length, hidden + 1
    r = torch.cat([edge_hidden, torch.ones_like(edge_hidden[..., :1])], -1) * edge_weight[..., None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch calls its sparse CSR tensors a beta feature)
        edges = torch.sparse_csr_tensor(*matrix, r.reshape(-1), size=(n * k, n * width), check_invariants=False)
    weight = torch.cat([radial_out.weight, radial_out.bias[:, None]], 1)  # (weights, width)
    x = h.reshape(n, -1)
    sh = sh.reshape(n, k, -1)
    out = h.new_zeros(n, n_out)
    for p in paths:
        # table weights [u, (h, w)] and each edge's coupling [i, node, m, k] = sum_j Y_j w3j[i, j, m]
        table_weight = (weight[p.weights].view(p.mul_in, p.mul_out, width) * p.path_weight).transpose(1, 2)
        table_weight = table_weight.reshape(p.mul_in, width * p.mul_out)
        coupling = torch.einsum("nkj,ijm->inmk", sh[..., p.in2], p.w3j.to(sh)).contiguous()
        x_in = x[:, p.in1].view(n, p.mul_in, p.dim_in)
        total = 0
        for i in range(p.dim_in):
            per_edge = edges @ (x_in[:, :, i] @ table_weight).view(n * width, p.mul_out)  # (edges, w)
            total = total + torch.bmm(coupling[i], per_edge.view(n, k, p.mul_out))  # (node, m, w)
        out[:, p.out] += total.transpose(1, 2).reshape(n, -1)
    return out.view(g, length, n_out)


class EquivariantNet(nn.Module):
    """E(3)-equivariant message passing with an invariant read-out.

    Parameters
    ----------
    n_scalars, n_vectors : int
        Node input features: scalars (``0e``) and vectors (``1o``).
    n_out : int
        Invariant outputs per node.
    scalars, vectors : int
        Hidden channels of each kind.
    layers : int
        Message-passing layers.
    lmax : int
        Highest degree of the edge spherical harmonics.
    """

    def __init__(self, n_scalars: int, n_vectors: int, n_out: int, scalars: int = 16, vectors: int = 4,
                 layers: int = 2, lmax: int = 1):
        super().__init__()
        self.irreps_in = o3.Irreps(f"{n_scalars}x0e + {n_vectors}x1o")
        self.irreps_hidden = o3.Irreps(f"{scalars}x0e + {vectors}x1o")
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.embed = o3.Linear(self.irreps_in, self.irreps_hidden)
        self.seq_embed = nn.Embedding(SEQ_CLASSES, 8)
        self.gates = nn.ModuleList()
        self.products = nn.ModuleList()
        self.radials = nn.ModuleList()
        self.self_links = nn.ModuleList()
        for _ in range(layers):
            gate = Gate(f"{scalars}x0e", [nn.functional.silu], f"{vectors}x0e", [torch.sigmoid], f"{vectors}x1o")
            product = o3.FullyConnectedTensorProduct(self.irreps_hidden, self.irreps_sh, gate.irreps_in, shared_weights=False)
            _drop_unused_steps(product)
            self.gates.append(gate)
            self.products.append(product)
            self.radials.append(mlp([N_RBF + 8, 32, product.weight_numel]))
            self.self_links.append(o3.Linear(self.irreps_hidden, gate.irreps_in))
        self.readout = o3.Linear(self.irreps_hidden, o3.Irreps(f"{n_out}x0e"))
        # without gradients the products are evaluated folded with their radial MLPs (_folded_messages)
        self.paths = [_product_paths(product) for product in self.products]

    def forward(self, scalars: torch.Tensor, vectors: torch.Tensor, nb: Neighbours) -> torch.Tensor:
        """Invariant node outputs.

        Parameters
        ----------
        scalars : torch.Tensor
            (G, L, n_scalars).
        vectors : torch.Tensor
            (G, L, n_vectors, 3) Cartesian vectors.
        nb : Neighbours

        Returns
        -------
        torch.Tensor
            (G, L, n_out).
        """
        # vectors into e3nn's l=1 basis (the same one its spherical harmonics use)
        v = o3.spherical_harmonics(1, vectors, normalize=False, normalization="norm")
        h = self.embed(torch.cat([scalars, v.flatten(-2)], -1))
        unit = torch.where(nb.mask[..., None], nb.vectors, torch.ones_like(nb.vectors))
        sh = o3.spherical_harmonics(self.irreps_sh, unit, normalize=True, normalization="component")
        radial_in = torch.cat([nb.features[..., :N_RBF], self.seq_embed(nb.seq_class)], -1)
        # messages are averaged over the real edges of each node
        edge_weight = nb.mask.to(h.dtype) / nb.mask.sum(-1, keepdim=True).clamp(min=1).to(h.dtype)
        # the folded evaluation is three times faster, but its backward pass (through a sparse matrix) is
        # thirty times slower than the product's: training uses the product
        fold = not torch.is_grad_enabled()
        matrix = _edge_matrix(nb.index, self.radials[0][-1].in_features + 1) if fold else None
        for gate, product, paths, radial, self_link in zip(self.gates, self.products, self.paths, self.radials,
                                                            self.self_links):
            hidden = radial[:-1](radial_in)
            if fold:
                messages = _folded_messages(paths, radial[-1], h, hidden, edge_weight, sh, matrix, gate.irreps_in.dim)
            else:
                weights = radial[-1](hidden)
                messages = (product(gather_neighbours(h, nb.index), sh, weights) * edge_weight[..., None]).sum(2)
            h = h + gate(self_link(h) + messages)
        return self.readout(h)


class InvariantNet(nn.Module):
    """Message passing on invariant node and edge features.

    Parameters
    ----------
    n_node, n_edge : int
        Input feature sizes.
    hidden : int
        Width.
    layers : int
        Message-passing layers.
    """

    def __init__(self, n_node: int, n_edge: int, hidden: int = 64, layers: int = 3):
        super().__init__()
        self.node = mlp([n_node, hidden, hidden])
        self.seq_embed = nn.Embedding(SEQ_CLASSES, 8)
        self.edge = mlp([n_edge + 8, hidden, hidden])
        # message MLP's first layer split into receiver, sender and edge parts
        # (computed per node, not per edge)
        self.receivers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.senders = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.edges = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.messages = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.updates = nn.ModuleList(mlp([2 * hidden, hidden, hidden]) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))

    def forward(self, nodes: torch.Tensor, nb: Neighbours) -> torch.Tensor:
        """(G, L, n_node) -> (G, L, hidden)."""
        h = self.node(nodes)
        # the edge MLP ends in a linear layer and each layer's edge term is linear in its output:
        # both products fold into one (cheaper per edge, same function)
        hidden_edge = self.edge[:-1](torch.cat([nb.features, self.seq_embed(nb.seq_class)], -1))
        last = self.edge[-1]
        weight = torch.cat([edge.weight @ last.weight for edge in self.edges])
        bias = torch.cat([edge.weight @ last.bias for edge in self.edges])
        edge_terms = nn.functional.linear(hidden_edge, weight, bias).split(h.shape[-1], -1)
        for receiver, sender, edge_term, message, update, norm in zip(
            self.receivers, self.senders, edge_terms, self.messages, self.updates, self.norms
        ):
            pre = receiver(h)[:, :, None] + gather_neighbours(sender(h), nb.index) + edge_term
            m = message(nn.functional.silu(pre))
            h = norm(h + update(torch.cat([h, _mean_over_edges(m, nb.mask)], -1)))
        return h
