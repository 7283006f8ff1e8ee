"""Built-in plugin: first-order optimizers wrapping ``torch.optim``."""
