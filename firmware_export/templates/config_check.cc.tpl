#include "${name}_config.h"
#include "${name}_example_data.h"
