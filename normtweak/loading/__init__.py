"""Models to start from: float models (the offline assets, a local folder, a hub id) and
checkpoints someone else quantized, whose linears a tweak takes over; and the guard that makes
transformers refuse normtweak's own layouts instead of loading them with random weights."""
