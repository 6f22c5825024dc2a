/* functions/manifest.c: being written */
