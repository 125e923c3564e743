# Written by clip-finetune (`train-cli export`) beside the weights, so that
#   AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
#   pipeline("image-classification", model=folder, trust_remote_code=True)
# give the classifier's logits: scale * (W @ normalize(visual_projection(pooled)) + b),
# with `scale` and `bias` from config.json's `clip_classifier`. The folder stays a
# plain CLIPModel checkpoint too (the head's weights are `classification_head.*`).
import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel
from transformers.modeling_outputs import ImageClassifierOutput


class CLIPFinetuneForImageClassification(CLIPModel):
    config_class = CLIPConfig
    main_input_name = "pixel_values"

    def __init__(self, config):
        super().__init__(config)
        head = getattr(config, "clip_classifier", None) or {}
        self.scale = float(head.get("scale", 1.0))
        self.classification_head = nn.Linear(
            config.projection_dim, config.num_labels, bias=bool(head.get("bias", True))
        )
        self.post_init()

    def forward(self, pixel_values=None, labels=None, **kwargs):
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        features = nn.functional.normalize(self.visual_projection(pooled), dim=-1)
        logits = self.scale * self.classification_head(features)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)
