/* sim.h - `fedseg sim`: a whole federation on one machine. */
#ifndef FEDSEG_SIM_H
#define FEDSEG_SIM_H
int sim_main(int argc, char **argv);
#endif
