"""The routing inspection's command line; what it does and how: :mod:`cifar10_recipe.inspect_routing`."""
import sys

from cifar10_recipe.inspect_routing import main

if __name__ == "__main__":
    sys.exit(main())
