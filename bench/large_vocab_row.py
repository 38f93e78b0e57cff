"""One row of the large-vocabulary table (:class:`LargeVocabRow`), and the settings that its measuring child,
the parent that runs it and the table all read. ``bench.large_vocab`` says how each figure is taken."""

from __future__ import annotations

from dataclasses import dataclass, field

CUDA_ALLOCATOR = "torch.cuda.max_memory_allocated() minus memory_allocated() once the inputs exist"
TORCH_CHUNK = 512  # LinearCrossEntropyOptions(batch_chunk_size=...)
RESULT_MARK = "LARGE_VOCAB_RESULT "  # the child's line of figures on its stdout starts with it
GiB, MiB = 2**30, 2**20


@dataclass
class LargeVocabRow:
    """One contender at one shape: its time, memory, and ratios to PyTorch's two paths."""

    contender: str  # "softgrad numpy", "torch dense", "torch chunked"
    kind: str  # "softgrad", "torch-dense" or "torch-chunked"
    backend: str | None  # the softgrad backend
    tokens: int
    hidden: int
    vocab: int
    device: str = "cpu"  # "cpu" or "cuda": where every contender of the table ran
    status: str = "ok"  # "ok", "skipped" or "failed"
    reason: str | None = None
    median_s: float | None = None
    spread_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    cold: bool = False  # the time is the first call's (no call after it fit the budget)
    first_call_s: float | None = None
    peak_extra_bytes: int | None = None  # first call: peak RSS minus the RSS once the inputs exist
    later_peak_extra_bytes: int | None = None  # a later call, against the same baseline
    tracemalloc_peak_bytes: int | None = None  # numpy: tracemalloc's peak during the first call
    baseline_rss_bytes: int | None = None
    baseline_device_bytes: int | None = None  # cuda, torch's allocator: memory_allocated() once the inputs exist
    memory_method: str | None = None
    chunk_rows: int | None = None
    loss: float | None = None
    grad_norms: list[float | None] = field(default_factory=list)  # |d input|, |d W|, |d b|
    agrees: bool | None = None  # loss and gradient norms within 1e-3 of the torch paths'
    threads: dict = field(default_factory=dict)  # what the child ran with: torch threads, threadpoolctl's pools
    gflops: float | None = None
    roofline_fraction: float | None = None
    ratios: dict = field(default_factory=dict)  # time_vs_chunked, time_vs_dense, memory_vs_chunked

    @property
    def flops(self) -> float:
        return 6.0 * self.tokens * self.vocab * self.hidden
