"""What the routers of a trained model decide on the CIFAR-10 test set: statistics per block, and a figure.

    python examples/cifar10/inspect_routing.py --pretrained dynconv_cifar_tiny --out runs/routing-tiny
    python examples/cifar10/inspect_routing.py --checkpoint runs/<run>/checkpoints/best.safetensors --out runs/r
    python examples/cifar10/inspect_routing.py --run runs/<run> --out runs/r --test-subset 2000

Writes ``routing.json`` (per block: mean weight per branch, normalised entropy, cross-sample variation, share of
the most common top branch, per-class mean weights; :func:`dynconv.routing_statistics`) and ``routing.png`` (per
block a heatmap of class x branch mean weights, and the entropy and variation of every block).
"""
import sys

from cifar10_recipe.inspect_routing import main

if __name__ == "__main__":
    sys.exit(main())
