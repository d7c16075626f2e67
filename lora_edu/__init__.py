"""lora_edu: the shared package of the course "LoRA from first principles".

Every notebook imports it (``import lora_edu``); anything longer than a few lines, reused
across notebooks, or worth a unit test lives here rather than in a notebook cell.
"""
from lora_edu.env_check import check_environment
from lora_edu.exercises import CheckResult, FunctionExercise, ValueExercise
from lora_edu.lora import LoRALinear, add_lora, count_parameters, merge_lora, print_trainable_parameters
from lora_edu.seeding import seed_everything

__version__ = "0.1.0"
__all__ = [
    "CheckResult", "FunctionExercise", "LoRALinear", "ValueExercise", "add_lora", "check_environment",
    "count_parameters", "merge_lora", "print_trainable_parameters", "seed_everything",
]
