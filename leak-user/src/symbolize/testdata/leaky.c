#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *volatile sink;

static inline __attribute__((always_inline)) void *inl_helper(size_t n) { /* L_INL_START */
	void *p = malloc(n * 3 + 7); /* L_INL_MALLOC */
	sink = p;
	return p; /* L_INL_END */
}

__attribute__((noipa)) void *leak_fn(size_t n) { /* L_FN */
	void *p = inl_helper(n); /* L_CALL */
	if (p)
		((char *)p)[0] = (char)n;
	return p;
}

int main(int argc, char **argv)
{
	char line[16];
	leak_fn((size_t)argc);
	printf("leak_fn=%p malloc=%p\n", (void *)leak_fn, dlsym(RTLD_DEFAULT, "malloc"));
	fflush(stdout);
	if (argc > 1 && fgets(line, sizeof line, stdin)) {
		void *h = dlopen(argv[1], RTLD_NOW);
		printf("plugin_fn=%p\n", h ? dlsym(h, "plugin_fn") : NULL);
		fflush(stdout);
	}
	for (;;)
		pause();
}
