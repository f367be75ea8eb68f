Build and run on this computer against TensorFlow Lite Micro, where `TFLM_DIR` is a folder made by TFLM's `build.sh` (it holds `flags.txt`) or a TFLite Micro tree in which `make -f tensorflow/lite/micro/tools/make/Makefile microlite` has run:

    cmake -S . -B build -DTFLM_DIR=/path/to/tflm && cmake --build build && ./build/${name}
    make TFLM_DIR=/path/to/tflm run

Both compile with exactly the defines and flags of the library they link, and stop at configure time, saying what is missing, when the library or `-DTF_LITE_STATIC_MEMORY` is not there. `./build/${name}_check INPUTS OUTPUTS [ARENA_BYTES]` runs raw inputs from a file through the model (see `check.cc`). For a board, add `${name}_model_data.cc` and the headers to your project and compile them with the defines your port's TFLM library was built with.
