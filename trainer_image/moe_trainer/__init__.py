"""The DeepSeek-style MoE trainer. Read it top down; each layer imports only the ones below it
(checked by `.importlinter`):

- entry points, run by module name from commands and manifests: `train` (one run in one process
  group, alone or under torchrun), `launch` (the elastic worker), `rdzv_store` (the rendezvous store);
- `runtime/`: generations of training in this process: membership, rendezvous, the step loop's
  boundaries (checkpoints, progress, metrics);
- `training/`: one rank's trainer (the optimizer step over the global batch) and its optimizer;
- `model/`, `checkpoint/`, `data/`: the transformer and its MoE layer; reshardable checkpoints and
  where they are stored; the corpus, tokenizer and sample order;
- `parallel/`: this process's rank, layout and process groups, and the gradient sync over them;
- `misconfig`: settings only run time can check, and how a worker reports them.

Must never import `dstj_operator` or `localcluster`; it meets the operator only through `dstj_api`.
"""
