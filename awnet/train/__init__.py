"""Training (DESIGN.md section 6): the recipes (`standard`, `pgd-at`, `trades`, `awnet` (MTARD), `awnet-scratch`)
and the loop that runs them (`TrainConfig`, `train`), with atomic checkpoints, resume and DDP; `reproduce`
is the package's main job (train the two teachers and an AW-Net, evaluate all three)."""
from .loop import TrainConfig, train
from .recipes import AW_RECIPES, RECIPES, MTARDWeights, RecipeContext

__all__ = ["AW_RECIPES", "MTARDWeights", "RECIPES", "RecipeContext", "TrainConfig", "train"]
