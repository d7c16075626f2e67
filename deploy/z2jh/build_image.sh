#!/usr/bin/env bash
# The students' image for Zero to JupyterHub, built from binder/ (what Binder builds): the course at its locked
# run-time versions (lock/runtime.txt), torch's CPU build, notebook 07's model converted into the image.
#   deploy/z2jh/build_image.sh REGISTRY/IMAGE:TAG      (needs Docker and `pip install jupyter-repo2docker`)
# then push it and put REGISTRY/IMAGE and TAG into values.yaml. NOT TESTED HERE: the course's machine has no Docker
# daemon and no Kubernetes (docs/instructor_guide.md, "Running a class", says what was tested and what was not).
set -euo pipefail
image=${1:?usage: deploy/z2jh/build_image.sh REGISTRY/IMAGE:TAG}
cd "$(dirname "$0")/../.."
jupyter-repo2docker --no-run --user-name jovyan --image-name "$image" .
echo "built $image from binder/; push it (docker push $image) and set singleuser.image in deploy/z2jh/values.yaml"
