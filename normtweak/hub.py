"""The Hugging Face hub, asked quickly: is it reachable, and may a hub id load offline?

A user without network who types a hub id (or mistypes a path so that it looks like
one) gets an answer at once instead of the hub client's retries (25 s).
"""

from __future__ import annotations

import os


def hub_reachable(timeout: float = 2.0) -> bool:
    """Can the Hugging Face hub be reached (one TCP connect, `timeout` seconds)?

    False at once when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set. Spares a user with no
    network the hub client's retries (25 s) before a mistyped name is reported.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or \
            os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("0", ""):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    answer: list[bool] = []

    def connect() -> None:  # in a thread: a hanging DNS lookup ignores socket timeouts
        try:
            with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(answer and answer[0])


def hub_kwargs(name: str, original: str) -> dict:
    """from_pretrained kwargs for a hub id: local files only when the hub is unreachable
    (then the id must be in the Hugging Face cache, else FileNotFoundError at once)."""
    if hub_reachable():
        return {}
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return {"local_files_only": True}
    raise FileNotFoundError(
        f"cannot load model {original!r}: no such local folder, and the Hugging Face hub is "
        f"not reachable (offline) nor has this id in its cache. Offline models: "
        f"'smollm2-135m', 'minilm-l6', or a local folder.")
