"""Layer 5: Hugging Face export and import (see the interop issue)."""
