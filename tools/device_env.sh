# Sourced by the GPU scripts: on a lent device machine, build CIFAR-10 from the carried source and put the carried
# timm and this checkout on the Python path. Elsewhere it only checks that CIFAR10_ROOT is set.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -d $here/.device_data ]]; then
  export PYTHONPATH="$here:$here/.device_data/pylib${PYTHONPATH:+:$PYTHONPATH}"
  if [[ -z ${CIFAR10_ROOT:-} ]]; then
    CIFAR10_ROOT=$(PYTHON=${PYTHON:-python3} "$here/.device_data/tools/cifar10-root")
    export CIFAR10_ROOT
  fi
fi
if [[ -z ${CIFAR10_ROOT:-} ]]; then
  echo "CIFAR10_ROOT is unset and there is no .device_data/ (tools/prepare_device_carry.sh makes it)" >&2
  return 1
fi
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import torch, timm; print('torch', torch.__version__, '| timm', timm.__version__, '| cuda',
torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
