"""Models-from-code entry point of the registered pyfunc (see serving.py). MLflow copies this
file into each model version and runs it on `mlflow.pyfunc.load_model`; it only hands MLflow the
class of the installed package, so loading runs the project's code and unpickles nothing."""

import mlflow

from hkgai_pipelines.registry.serving import HkgaiChatModel

mlflow.models.set_model(HkgaiChatModel())
