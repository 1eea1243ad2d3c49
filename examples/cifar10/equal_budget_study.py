"""The equal budget study's command line; what it does and how: :mod:`cifar10_recipe.equal_budget_study`."""
import sys

from cifar10_recipe.equal_budget_study import main

if __name__ == "__main__":
    sys.exit(main())
