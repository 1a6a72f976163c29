"""LSTM, GRU and RNN as ONNX defines them (gate orders iofc / zrh), unrolled over the sequence.

The sequence length is fixed per input signature, so the time loop becomes a straight line of
steps (CUDA-graph capturable). The input projections of all time steps are one matrix product;
each step adds the recurrent product. ``sequence_lens`` masks finished sequences (state kept,
outputs zero), ``layout=1`` (batch first), ``clip``, peepholes and both directions are supported;
activations other than Sigmoid/Tanh/Relu are not.
"""

from __future__ import annotations

import torch

from edgecore_torch.ops._registry import OpContext, register

_ACTIVATIONS = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu}
_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _check(node) -> str | None:
    names = node.attrs.get("activations")
    if names is not None:
        unknown = [n for n in names if n not in _ACTIVATIONS]
        if unknown:
            return f"{node.op_type}(activations={unknown})"
    if node.attrs.get("input_forget", 0):
        return f"{node.op_type}(input_forget=1)"
    return None


def _activations(ctx: OpContext) -> list:
    names = ctx.attr("activations") or _DEFAULTS[ctx.node.op_type] * (2 if ctx.attr("direction") == "bidirectional" else 1)
    per = len(_DEFAULTS[ctx.node.op_type])
    fns = [_ACTIVATIONS[n] for n in names]
    if len(fns) == per:
        fns = fns * 2
    return [fns[:per], fns[per : 2 * per]]


def _recurrent(ctx: OpContext, cell) -> object:
    """Shared driver: ``cell(x_proj_t, h, c, w, r, b_rec, p, acts) -> (h, c)`` per direction."""
    layout = ctx.attr("layout", 0)
    direction = ctx.attr("direction", "forward")
    hidden = ctx.attr("hidden_size")
    clip = ctx.attr("clip")
    acts = _activations(ctx)
    dirs = 2 if direction == "bidirectional" else 1
    lstm = ctx.node.op_type == "LSTM"
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[ctx.node.op_type]
    x_shape = ctx.shape(0)
    steps = x_shape[1] if layout else x_shape[0]
    want_y = ctx.output_wanted(0)

    def run(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        if layout:
            x = x.transpose(0, 1)
            h0 = h0.transpose(0, 1) if h0 is not None else None
            c0 = c0.transpose(0, 1) if c0 is not None else None
        batch = x.shape[1]
        ys, hs, cs = [], [], []
        mask_steps = None
        if seq_lens is not None:
            mask_steps = [(seq_lens > t).unsqueeze(1) for t in range(steps)]
        for d in range(dirs):
            reverse = direction == "reverse" or d == 1
            w_d, r_d = w[d], r[d]
            proj = torch.matmul(x, w_d.t())  # [steps, batch, gates * hidden]
            b_rec = None
            if b is not None:
                b_in, b_rec = b[d][: gates * hidden], b[d][gates * hidden :]
                proj = proj + b_in if ctx.node.op_type == "GRU" else proj + b_in + b_rec
            h = h0[d] if h0 is not None else x.new_zeros(batch, hidden)
            c = (c0[d] if c0 is not None else x.new_zeros(batch, hidden)) if lstm else None
            peep = p[d] if p is not None else None
            outs = [None] * steps
            order = range(steps - 1, -1, -1) if reverse else range(steps)
            for t in order:
                new_h, new_c = cell(proj[t], h, c, r_d, b_rec, peep, acts[d], hidden, clip)
                if mask_steps is not None:
                    keep = mask_steps[t]
                    new_h = torch.where(keep, new_h, h)
                    if lstm:
                        new_c = torch.where(keep, new_c, c)
                    outs[t] = torch.where(keep, new_h, torch.zeros_like(new_h))
                else:
                    outs[t] = new_h
                h, c = new_h, new_c
            if want_y:
                ys.append(torch.stack(outs))  # [steps, batch, hidden]
            hs.append(h)
            cs.append(c)
        y = torch.stack(ys, dim=1) if want_y else None  # [steps, dirs, batch, hidden]
        y_h = torch.stack(hs)
        y_c = torch.stack(cs) if lstm else None
        if layout:
            y = y.permute(2, 0, 1, 3) if y is not None else None
            y_h = y_h.transpose(0, 1)
            y_c = y_c.transpose(0, 1) if y_c is not None else None
        return (y, y_h, y_c) if lstm else (y, y_h)

    return run


def _clip(x, clip):
    return torch.clamp(x, -clip, clip) if clip is not None else x


def _lstm_cell(xp, h, c, r, b_rec, peep, acts, hidden, clip):
    f, g, hh = acts
    z = xp + h @ r.t()
    i_, o_, f_, c_ = z.split(hidden, dim=-1)
    if peep is not None:
        pi, po, pf = peep.split(hidden)
        i_ = i_ + pi * c
        f_ = f_ + pf * c
    i_t, f_t = f(_clip(i_, clip)), f(_clip(f_, clip))
    c_t = f_t * c + i_t * g(_clip(c_, clip))
    if peep is not None:
        o_ = o_ + po * c_t
    return f(_clip(o_, clip)) * hh(c_t), c_t


def _make_gru_cell(linear_before_reset: bool):
    def cell(xp, h, c, r, b_rec, peep, acts, hidden, clip):
        f, g = acts
        xz, xr, xh = xp.split(hidden, dim=-1)
        rz, rr, rh = r.split(hidden, dim=0)
        bz, br, bh = b_rec.split(hidden) if b_rec is not None else (0, 0, 0)
        z = f(_clip(xz + h @ rz.t() + bz, clip))
        rt = f(_clip(xr + h @ rr.t() + br, clip))
        if linear_before_reset:
            candidate = g(_clip(xh + rt * (h @ rh.t() + bh), clip))
        else:
            candidate = g(_clip(xh + (rt * h) @ rh.t() + bh, clip))
        return (1 - z) * candidate + z * h, None

    return cell


def _rnn_cell(xp, h, c, r, b_rec, peep, acts, hidden, clip):
    return acts[0](_clip(xp + h @ r.t(), clip)), None


@register("LSTM", check=_check)
def _lstm(ctx: OpContext):
    return _recurrent(ctx, _lstm_cell)


@register("GRU", check=_check)
def _gru(ctx: OpContext):
    return _recurrent(ctx, _make_gru_cell(bool(ctx.attr("linear_before_reset", 0))))


@register("RNN", check=_check)
def _rnn(ctx: OpContext):
    return _recurrent(ctx, _rnn_cell)
