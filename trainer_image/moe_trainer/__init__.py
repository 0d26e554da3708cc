"""The DeepSeek-style MoE trainer: model, data, training loop (and, later, the elastic runtime).

Must never import `dstj_operator` or `localcluster`; it meets the operator only through `dstj_api`.
"""
