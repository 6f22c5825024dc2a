/* gateway/http.c: being written */
