#!/usr/bin/env bash
# Runs every command of docs/sources.md from the repository root (each must succeed) and writes the two captions
# the page shows to docs/sources/captions/. DATA is a folder holding the samples the commands read
# (cinc2021-sample/, cpsc2018-sample/, ptb-xl/, vendor-ecg/philips-xml/).
# Usage: DATA=path/to/samples bash docs/sources/commands.sh   (about 3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
: "${DATA:?set DATA to the folder holding cinc2021-sample, cpsc2018-sample, ptb-xl and vendor-ecg}"
rm -rf outputs/ptbxl-sample outputs/cinc2021 outputs/cpsc2018 outputs/mimic-layout outputs/wfdb-folder \
  outputs/cinc2021-captions outputs/single

# Supported sources -> one prepared dataset each
$PY dataset_scripts/prepare.py --source ptbxl --input data/ptbxl_sample --output-dir outputs/ptbxl-sample
$PY dataset_scripts/prepare.py --source challenge --input $DATA/cinc2021-sample --output-dir outputs/cinc2021
$PY dataset_scripts/prepare.py --source challenge --input $DATA/cpsc2018-sample --output-dir outputs/cpsc2018
$PY dataset_scripts/prepare.py --source mimic --input tests/fixtures/mimic_iv_ecg_layout --output-dir outputs/mimic-layout
$PY dataset_scripts/prepare.py --source wfdb-folder --input $DATA/cpsc2018-sample \
  --labels docs/sources/cpsc2018_labels_example.csv --output-dir outputs/wfdb-folder
$PY cqa_generate.py --dataset outputs/cinc2021 --output_dir outputs/cinc2021-captions --backend template

# Single clinical files
$PY cqa_generate.py --ecg_file $DATA/vendor-ecg/philips-xml/129DYPRG.XML --backend template --output_dir outputs/single
$PY cqa_generate.py --ecg_file "$($PY -c 'import pydicom.examples as e; print(e.get_path("waveform"))')" \
  --backend template --output_dir outputs/single
$PY -c "
import numpy as np, wfdb
signal, fields = wfdb.rdsamp('$DATA/ptb-xl/records500/00000/00001_hr')
time = np.arange(len(signal)) / fields['fs']
np.savetxt('outputs/00001_hr.csv', np.column_stack([time, signal]), delimiter=',', fmt='%.6g',
           header=','.join(['time_s', *fields['sig_name']]), comments='')"
$PY cqa_generate.py --ecg_file outputs/00001_hr.csv --age 52 --sex female --backend template --output_dir outputs/single

# The captions shown on the page (WFDB records of the Challenge, read with their Dx codes)
$PY cqa_generate.py --ecg_file $DATA/cinc2021-sample/E07507.hea --backend template \
  --output_dir docs/sources/captions
$PY cqa_generate.py --ecg_file $DATA/cpsc2018-sample/A0065.hea --backend template \
  --output_dir docs/sources/captions
git rev-parse HEAD > docs/sources/captions/COMMIT
echo "every command of the README section Supported sources and formats ran"
