/* sandbox/sandbox.c: being written */
