Add `${name}_model_data.cc` and the headers to your MCU project (or build `main.cc` on a host against a TFLite Micro tree: `cmake -DTFLM_DIR=... . && make`).
