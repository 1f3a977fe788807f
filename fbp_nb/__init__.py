__version__ = "0.0.1"

# The library's two front doors, at the top level: `fbp_nb.create_model(name)` and `fbp_nb.load_model(checkpoint)`.
# Both import torch and the model registry only when first used, so `import fbp_nb` stays light (no torch import).
__all__ = ['create_model', 'load_model', 'list_models']

def create_model(name:str, pretrained=None, **kwargs):
    "A model of the registry by name (`fbp_nb.models.create_model`): `pretrained` a weights file, `kwargs` its builder's options."
    from .models import create_model as _create
    return _create(name, pretrained=pretrained, **kwargs)

def list_models(pattern:str='*', task:str|None=None) -> list:
    "Names of the registered models (`fbp_nb.models.list_models`), optionally matching a pattern or of one task."
    from .models import list_models as _list
    return _list(pattern, task=task)

def load_model(checkpoint, device='cpu'):
    "The trained model (eval mode, on `device`) of a run folder or its model.pt/last.pt (`fbp_nb.train.load_run`); its config in `.run_info`."
    from .train import load_run
    return load_run(checkpoint, device=device)[0]
