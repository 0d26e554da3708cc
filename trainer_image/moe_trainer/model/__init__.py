"""The model: a decoder-only transformer (`transformer.py`) whose feed-forward layers are DeepSeek-style
MoE (`moe.py`: router and layer; `experts.py`: grouped expert GEMMs; `balance.py`: every decision made
from token counts; `expert_parallel.py`: tokens to their experts' ranks and back). No training loop here.
"""
