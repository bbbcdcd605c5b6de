from .bpe import ClipBpeTokenizer
from .clip import CLIPEncoder
from .imagebind import ImageBindConfig, ImageBindEncoder, ImageBindVisionText, load_imagebind_state_dict

__all__ = ["CLIPEncoder", "ClipBpeTokenizer", "ImageBindConfig", "ImageBindEncoder", "ImageBindVisionText", "load_imagebind_state_dict"]
