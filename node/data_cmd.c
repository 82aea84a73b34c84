/* data_cmd.c - `fedseg data scan DIR` lists the cases a folder holds (what
 * train, node and infer will see); `fedseg data phantom` writes synthetic
 * cases (the demo's fallback without real data). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "cmds.h"
#include "data_cmd.h"
#include "imaging.h"

static void data_usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg data scan DIR [--modalities LIST] [--format text|json] [--no-probe]\n"
	    "       fedseg data phantom --out DIR [--cases N] [--size N] [--seed N]\n"
	    "scan:    lists each case with its modality files and label, and each\n"
	    "         case left out with the reason (missing modality, two candidates\n"
	    "         for one modality, unreadable file). Layouts: manifest, BraTS,\n"
	    "         Flywheel tar / sync, BIDS, MSD Task01 (docs/data.md). Exit 1\n"
	    "         when no case is usable. --no-probe skips opening file headers.\n"
	    "phantom: writes N synthetic cases (BraTS 2021 naming and labels).\n");
}

static int data_scan(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"modalities", required_argument, 0, 'm'},
	    {"format", required_argument, 0, 'f'}, {"help", no_argument, 0, 'h'},
	    {"no-probe", no_argument, 0, 'P'},
	    {0, 0, 0, 0}};
	int mods[4] = {0, 1, 2, 3}, nmod = 4, json = 0, c, flags =
	    IMG_SCAN_ALLOW_EMPTY, rc;
	img_dataset ds = {0};
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			nmod = img_modality_list_parse(optarg, mods);
			if (nmod < 1)
				return cmd_fail("data scan", "--modalities: '%s'", optarg);
			break;
		case 'f':
			if (strcmp(optarg, "json") && strcmp(optarg, "text"))
				return cmd_fail("data scan", "--format: text or json");
			json = strcmp(optarg, "json") == 0;
			break;
		case 'P': flags |= IMG_SCAN_NO_PROBE; break;
		case 'h': data_usage(stdout); return 0;
		default: data_usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		data_usage(stderr);
		return cmd_fail("data scan", "one folder expected");
	}
	if (img_dataset_scan_ex(argv[optind], mods, nmod, flags, &ds) != 0)
		return cmd_fail("data scan", "%s", fs_error());
	if (json) {
		cJSON *root = cJSON_CreateObject();
		cJSON *arr = cJSON_AddArrayToObject(root, "cases");
		cJSON *sk = cJSON_AddArrayToObject(root, "skipped");
		for (int i = 0; i < ds.n; i++) {
			cJSON *o = cJSON_CreateObject(), *m;
			cJSON_AddStringToObject(o, "id", ds.cases[i].id);
			m = cJSON_AddObjectToObject(o, "modalities");
			for (int k = 0; k < IMG_NMOD; k++)
				if (ds.cases[i].paths[k])
					cJSON_AddStringToObject(m, img_modality_name(k),
					    ds.cases[i].paths[k]);
			if (ds.cases[i].label)
				cJSON_AddStringToObject(o, "label", ds.cases[i].label);
			else
				cJSON_AddNullToObject(o, "label");
			cJSON_AddItemToArray(arr, o);
		}
		for (int i = 0; i < ds.nskipped; i++) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "path", ds.skipped[i].path);
			cJSON_AddStringToObject(o, "reason", ds.skipped[i].reason);
			cJSON_AddItemToArray(sk, o);
		}
		char *t = cJSON_Print(root);
		printf("%s\n", t ? t : "{}");
		free(t);
		cJSON_Delete(root);
	} else {
		printf("layout: %s\n", ds.layout ? ds.layout : "?");
		for (int i = 0; i < ds.n; i++) {
			printf("%s:", ds.cases[i].id);
			for (int k = 0; k < IMG_NMOD; k++)
				if (ds.cases[i].paths[k]) {
					printf(" %s", img_modality_name(k));
					if (ds.cases[i].volume[k] > 0)
						printf("[%d]", ds.cases[i].volume[k] - 1);
				}
			printf("%s\n", ds.cases[i].label ? " +label" : "");
			for (int k = 0; k < IMG_NMOD; k++)
				if (ds.cases[i].paths[k])
					printf("    %-6s %s\n", img_modality_name(k),
					    ds.cases[i].paths[k]);
			if (ds.cases[i].label)
				printf("    %-6s %s\n", "label", ds.cases[i].label);
		}
		for (int i = 0; i < ds.nskipped; i++)
			printf("skipped %s (%s): %s\n", ds.skipped[i].id ?
			    ds.skipped[i].id : "-", ds.skipped[i].path,
			    ds.skipped[i].reason);
		printf("%d case(s), %d skipped\n", ds.n, ds.nskipped);
	}
	rc = ds.n > 0 ? 0 : 1;
	if (rc)
		fprintf(stderr, "fedseg data scan: %s: no usable case\n",
		    argv[optind]);
	img_dataset_free(&ds);
	return rc;
}

static int data_phantom(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"out", required_argument, 0, 'o'}, {"cases", required_argument, 0, 'n'},
	    {"size", required_argument, 0, 's'}, {"seed", required_argument, 0, 'S'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *out = NULL;
	int n = 8, size = 96, seed = 1, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'o': out = optarg; break;
		case 'n': bad = cmd_int("cases", optarg, 1, 10000, &n); break;
		case 's': bad = cmd_int("size", optarg, 16, 512, &size); break;
		case 'S': bad = cmd_int("seed", optarg, 0, 1000000, &seed); break;
		case 'h': data_usage(stdout); return 0;
		default: data_usage(stderr); return 2;
		}
		if (bad)
			return 2;
	}
	if (out == NULL)
		return cmd_fail("data phantom", "--out is required");
	for (int i = 0; i < n; i++) {
		char id[64];
		snprintf(id, sizeof(id), "Phantom_%03d", i + 1);
		if (img_phantom_write(out, id, size, (uint64_t)seed * 1000 + i) != 0)
			return cmd_fail("data phantom", "%s", fs_error());
	}
	printf("%d phantom case(s) in %s\n", n, out);
	return 0;
}

int data_main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		data_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "scan") == 0)
		return data_scan(argc - 1, argv + 1);
	if (strcmp(argv[1], "phantom") == 0)
		return data_phantom(argc - 1, argv + 1);
	return cmd_fail("data", "unknown subcommand '%s' (scan, phantom)", argv[1]);
}
