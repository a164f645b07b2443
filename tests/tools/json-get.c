/* json-get PATH [FILE]: prints the value at a dotted path of a JSON document (stdin without
 * FILE). Path parts are object keys, or array indices when the value there is an array;
 * strings print raw, integral numbers as integers, objects and arrays as compact JSON, null as
 * "null". Exit 1 when the path is missing or the input is not JSON, 2 on usage errors. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#define INPUT_MAX (16 * 1024 * 1024)

static char *read_all(FILE *f)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		len += fread(buf + len, 1, cap - len - 1, f);
		if (ferror(f) || len > INPUT_MAX) {
			free(buf);
			return NULL;
		}
		if (feof(f)) {
			buf[len] = '\0';
			return buf;
		}
		if (len + 1 == cap) {
			char *bigger = realloc(buf, cap * 2);
			if (!bigger)
				free(buf);
			buf = bigger;
			cap *= 2;
		}
	}
	return NULL;
}

static const cJSON *lookup(const cJSON *node, char *path)
{
	if (!*path)
		return node;
	for (char *save = NULL, *part = strtok_r(path, ".", &save); node && part;
	     part = strtok_r(NULL, ".", &save)) {
		if (cJSON_IsArray(node)) {
			char *end;
			errno = 0;
			long i = strtol(part, &end, 10);
			/* A negative index counts from the end: -1 is the last element. */
			if (i < 0)
				i += cJSON_GetArraySize(node);
			if (errno || end == part || *end || i < 0 || i > 0x7fffffffL)
				return NULL;
			node = cJSON_GetArrayItem(node, (int)i);
		} else if (cJSON_IsObject(node)) {
			node = cJSON_GetObjectItemCaseSensitive(node, part);
		} else {
			return NULL;
		}
	}
	return node;
}

static int print_value(const cJSON *v)
{
	if (cJSON_IsString(v))
		return printf("%s\n", v->valuestring) < 0 ? -EIO : 0;
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (d == floor(d) && fabs(d) < 9007199254740992.0)
			return printf("%.0f\n", d) < 0 ? -EIO : 0;
		return printf("%.17g\n", d) < 0 ? -EIO : 0;
	}
	char *text = cJSON_PrintUnformatted(v);
	if (!text)
		return -ENOMEM;
	int ret = printf("%s\n", text) < 0 ? -EIO : 0;
	free(text);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fputs("Usage: json-get PATH [FILE]\n", stderr);
		return 2;
	}
	FILE *f = argc == 3 ? fopen(argv[2], "r") : stdin;
	if (!f) {
		fprintf(stderr, "json-get: %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	char *text = read_all(f);
	if (f != stdin)
		fclose(f);
	cJSON *doc = text ? cJSON_Parse(text) : NULL;
	free(text);
	if (!doc) {
		fputs("json-get: input is not JSON\n", stderr);
		return 1;
	}
	char *path = strdup(argv[1]);
	const cJSON *v = path ? lookup(doc, path) : NULL;
	int ret = 1;
	if (!v)
		fprintf(stderr, "json-get: %s: no such path\n", argv[1]);
	else
		ret = print_value(v) < 0 ? 1 : 0;
	free(path);
	cJSON_Delete(doc);
	return ret;
}
