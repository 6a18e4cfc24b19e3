"""Network building blocks: the backbone contract and the task network the core builds."""

from medxfer.models.backbone import Backbone, LoadReport
from medxfer.models.network import TransferNetwork, build_network

__all__ = ["Backbone", "LoadReport", "TransferNetwork", "build_network"]
