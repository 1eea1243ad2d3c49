"""The four axis study's command line; what it does and how: :mod:`cifar10_recipe.four_axis_study`."""
import sys

from cifar10_recipe.four_axis_study import main

if __name__ == "__main__":
    sys.exit(main())
