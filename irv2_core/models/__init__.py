"""The network and everything that puts weights into it.

- ``metadata``: input sizes, feature width, eval protocols (pure Python; the config uses it);
- ``factory``: ``create_model(name, ...)`` with the built-in models registered;
- ``inception_resnet_v2``: the network cells; ``registry``: builders by name;
- ``ckpt_io``: reading and atomically writing MindSpore checkpoint files (and their metadata);
- ``protocol``: the input protocol a checkpoint's weights expect, recorded inside it;
- ``weights``: the one path that loads weights into a network (checkpoints, pretrained
  fine-tuning, timm safetensors import).

This ``__init__`` imports nothing heavy, so that ``irv2_core.models.metadata`` stays free of
MindSpore.
"""
