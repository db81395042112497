"""A progress bar on stderr (tqdm when available, a plain line otherwise) showing loss,
accuracy and events/s during training, validation, test and eval. Disabled bars print nothing."""

from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    """`Progress(total, desc, enabled)`; `update(loss, acc, events_per_s)` once per batch; `close()`."""

    def __init__(self, total: Optional[int], desc: str, enabled: bool = True):
        self.enabled = enabled
        self.total, self.desc, self.n = total, desc, 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
            except ImportError:  # plain fallback: one line per update, overwritten with \r
                self.bar = None

    def update(self, loss: float, acc: float, events_per_s: float) -> None:
        self.n += 1
        if not self.enabled:
            return
        post = f"loss={loss:.4f} acc={acc:.3f} ev/s={events_per_s:.3g}"
        if self.bar is not None:
            self.bar.set_postfix_str(post, refresh=False)
            self.bar.update(1)
        else:
            total = "" if self.total is None else f"/{self.total}"
            sys.stderr.write(f"\r{self.desc} {self.n}{total} {post}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.n:
            sys.stderr.write("\n")
        self.enabled = False  # close() twice prints nothing more
