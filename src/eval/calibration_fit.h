// The calibration fit over neighbour lists already found (LeaveOneOut and FitCalibration).
#pragma once

#include <string>
#include <vector>

#include "nearlabel/classify.h"

namespace nearlabel {

// Fits temperature and floor (see Calibration) on `rows`: each row's own label labels[row]
// against votes[row], its neighbours' vote. Unfitted (temperature 0) when none of `rows` has
// a vote.
Calibration FitCalibrationFromVotes(const std::vector<Prediction>& votes,
                                    const std::vector<std::string>& labels,
                                    const std::vector<size_t>& rows, size_t classes, int k,
                                    Vote vote);

}  // namespace nearlabel
