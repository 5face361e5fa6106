"""Count what would make the host wait for a GPU, on the CPU (issue 28 item 2, issue 26 finding 5).

``torch.cuda.set_sync_debug_mode`` only exists on CUDA; on the CPU twin the same code runs with
every tensor on the host, so a read of a tensor costs nothing and nothing complains. This counter
names each operation that synchronises the host with the device on CUDA, wherever it is issued:

- ``read``: a tensor's values brought to Python (``tolist``, ``numpy``, and ``item``/``int``/
  ``float``/``bool``/indexing by a tensor, which all reach ``aten._local_scalar_dense``);
- ``header``: ``tolist`` inside ``pp.unpack_header``, which refuses anything but a host tensor
  (the step header travels on the host groups): a read of host memory, never a device wait;
- ``shape``: an op whose output size depends on the values (``nonzero``, ``masked_select``,
  boolean indexing, ``repeat_interleave`` without ``output_size``, ``unique``): the host waits for
  the values to size the output;
- ``upload``: ``torch.tensor``/``torch.as_tensor`` with an explicit ``device`` (a blocking copy
  from pageable memory on CUDA) and ``Tensor.to``/``copy_`` to a device without ``non_blocking``.

Use: ``with SyncCounter() as c: ...``; ``c.counts`` is a ``Counter`` by kind, ``c.where`` the
first few call sites of each kind (for a failing assertion's message). Test-only: it patches
``torch.Tensor`` methods while it is active, in this process.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import Counter, defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_SHAPE_OPS = {
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
}


def _device_arg(args, kwargs):
    if "device" in kwargs:
        return kwargs["device"]
    for a in args:
        if isinstance(a, (torch.device, str)) and not isinstance(a, torch.dtype):
            return a
    return None


# without the dispatch mode: the Python entry points of the same waits
_PY_WAITS = [
    (torch.Tensor, n, "read") for n in ("item", "__int__", "__float__", "__bool__", "__index__")
] + [
    (torch.Tensor, "nonzero", "shape"),
    (torch, "nonzero", "shape"),
    (torch, "masked_select", "shape"),
    (torch.Tensor, "masked_select", "shape"),
    (torch, "repeat_interleave", "shape"),
    (torch.Tensor, "repeat_interleave", "shape"),
]


class _Mode(TorchDispatchMode):
    def __init__(self, counter: "SyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            self.counter.add("read")
        elif func in _SHAPE_OPS:
            self.counter.add("shape")
        elif func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            self.counter.add("shape")
        elif func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default):
            idx = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in idx):
                self.counter.add("shape")
        return func(*args, **kwargs)


class SyncCounter:
    """``dispatch``: count scalar reads and value-sized ops at the dispatcher (everything, also from
    C++); False: by patching the Python methods that do them (``item``, ``int()``, ``bool()``,
    ``nonzero``, ...), for processes whose collectives should not pass a Python dispatch mode."""

    def __init__(self, dispatch: bool = True) -> None:
        self.dispatch = dispatch
        self.counts: Counter = Counter()
        self.by_thread: dict[int, Counter] = defaultdict(Counter)  # thread ident -> counts
        self.where: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str) -> None:
        self.counts[kind] += 1
        self.by_thread[threading.get_ident()][kind] += 1
        if len(self.where[kind]) < 4:
            frames = [
                f"{f.filename.rsplit('/', 3)[-1]}:{f.lineno} {f.name}"
                for f in traceback.extract_stack()[:-2]
                if "sync_counter" not in f.filename and "/torch/" not in f.filename
            ]
            self.where[kind].append(" <- ".join(reversed(frames[-3:])))

    def __enter__(self) -> "SyncCounter":
        T = torch.Tensor
        self._saved = {
            "tolist": T.tolist,
            "numpy": T.numpy,
            "to": T.to,
            "copy_": T.copy_,
            "tensor": torch.tensor,
            "as_tensor": torch.as_tensor,
        }
        saved, counter = self._saved, self

        def tolist(t, *a, **k):
            caller = sys._getframe(1).f_code.co_name
            counter.add("header" if caller == "unpack_header" else "read")
            return saved["tolist"](t, *a, **k)

        def numpy(t, *a, **k):
            counter.add("read")
            return saved["numpy"](t, *a, **k)

        def to(t, *a, **k):
            if _device_arg(a, k) is not None and not k.get("non_blocking", False):
                counter.add("upload")
            return saved["to"](t, *a, **k)

        def copy_(t, src, non_blocking=False):
            if not non_blocking and src.device != t.device:
                counter.add("upload")
            return saved["copy_"](t, src, non_blocking)

        def tensor(*a, **k):
            if k.get("device") is not None:
                counter.add("upload")
            return saved["tensor"](*a, **k)

        def as_tensor(*a, **k):
            if k.get("device") is not None:
                counter.add("upload")
            return saved["as_tensor"](*a, **k)

        T.tolist, T.numpy, T.to, T.copy_ = tolist, numpy, to, copy_
        torch.tensor, torch.as_tensor = tensor, as_tensor
        self._methods: dict[tuple[object, str], object] = {}
        if self.dispatch:
            self._mode = _Mode(self)
            self._mode.__enter__()
            return self
        for owner, name, kind in _PY_WAITS:
            real = getattr(owner, name)
            self._methods[(owner, name)] = real

            def counted(*a, __real=real, __kind=kind, __name=name, **k):
                if __name == "repeat_interleave" and k.get("output_size") is not None:
                    return __real(*a, **k)
                counter.add(__kind)
                return __real(*a, **k)

            setattr(owner, name, counted)
        return self

    def __exit__(self, *exc) -> None:
        if self.dispatch:
            self._mode.__exit__(*exc)
        for (owner, name), real in self._methods.items():
            setattr(owner, name, real)
        T, s = torch.Tensor, self._saved
        T.tolist, T.numpy, T.to, T.copy_ = s["tolist"], s["numpy"], s["to"], s["copy_"]
        torch.tensor, torch.as_tensor = s["tensor"], s["as_tensor"]

    def report(self) -> str:
        return "; ".join(f"{k} x{v}: {self.where[k]}" for k, v in sorted(self.counts.items()))
