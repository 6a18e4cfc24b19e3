"""Network building blocks: the backbone contract and the task network the core builds."""

from medxfer.models.backbone import Backbone, LoadReport
from medxfer.models.domain import in_domain, set_domain
from medxfer.models.ensemble import EnsembleNetwork
from medxfer.models.network import TransferNetwork, build_network
from medxfer.models.segmentation import (SegmentationModel, SegmentationNetwork,
                                         build_segmentation_network, builds_segmentation)

__all__ = ["Backbone", "EnsembleNetwork", "LoadReport", "SegmentationModel",
           "SegmentationNetwork", "TransferNetwork", "build_network",
           "build_segmentation_network", "builds_segmentation", "in_domain", "set_domain"]
