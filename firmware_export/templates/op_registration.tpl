    if (resolver.${method}() != kTfLiteOk) return kTfLiteError;
