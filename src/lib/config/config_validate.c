#include "config_validate.h"

#include "config_daemon.h"
#include "config_pool.h"

int config_validate_file_report(const char *path, struct config_report *report, char *err,
				size_t errlen)
{
	struct toml_value *root;
	int r = config_parse_file(path, &root, err, errlen);
	if (r < 0)
		return r;
	if (toml_table_get(root, "nts-pool-ke-server")) {
		struct config_pool pool;
		r = config_pool_from_tree_report(root, path, &pool, report, err, errlen);
		if (r >= 0) {
			config_pool_free(&pool);
			r = CONFIG_VALIDATE_POOL;
		}
	} else {
		struct config_daemon daemon;
		r = config_daemon_from_tree_report(root, path, &daemon, report, err, errlen);
		if (r >= 0) {
			config_daemon_free(&daemon);
			r = CONFIG_VALIDATE_DAEMON;
		}
	}
	toml_free(root);
	return r;
}

int config_validate_file(const char *path, char *err, size_t errlen)
{
	return config_validate_file_report(path, NULL, err, errlen);
}
